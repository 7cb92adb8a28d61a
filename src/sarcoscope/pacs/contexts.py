"""Presentation contexts: the storage SOP classes we accept and the transfer syntaxes we negotiate.

Compressed CT is common in PACS archives; accepting it as stored avoids transcoding on the
server and keeps transfers small. Each compressed syntax gets its own context so the peer
can pick the one matching how an instance is stored (one accepted syntax per context).
"""

from __future__ import annotations

from pydicom import uid
from pynetdicom.presentation import PresentationContext, build_context

#: Image storage classes a CT series may use.
CT_STORAGE: tuple[str, ...] = (
    uid.CTImageStorage,
    uid.EnhancedCTImageStorage,
    uid.LegacyConvertedEnhancedCTImageStorage,
)

UNCOMPRESSED: tuple[str, ...] = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)

#: Compressed syntaxes we can decode (pylibjpeg, pylibjpeg-openjpeg, pyjpegls, RLE).
COMPRESSED: tuple[str, ...] = (
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.RLELossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.DeflatedExplicitVRLittleEndian,
)

ALL_SYNTAXES: tuple[str, ...] = UNCOMPRESSED + COMPRESSED


def ct_retrieve_contexts() -> list[PresentationContext]:
    """Contexts for receiving a CT series (C-GET sub-operations): one per (class, syntax group)."""
    contexts = []
    for sop_class in CT_STORAGE:
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
        for ts in COMPRESSED:
            contexts.append(build_context(sop_class, [ts]))
    return contexts
