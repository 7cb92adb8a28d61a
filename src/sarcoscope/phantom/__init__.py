"""sarcoscope.phantom: synthetic abdominal CT with exact ground-truth tissue labels.

Used by the demo, the unit tests, the L3-finder evaluation, the benchmarks and as the
training data of the segmentation model. See docs/phantom.md.

Example::

    from sarcoscope.phantom import PhantomParams, make_slice, random_params
    s = make_slice(random_params(np.random.default_rng(1)), level="L3")
    s.hu, s.labels, s.areas_cm2      # float32 HU, uint8 labels 0..4, truth areas

``structures.COMPARTMENT`` (structure id → 1 muscle envelope / 3 visceral fat / 4 SAT) is
part of the public contract: the training pipeline derives its targets from it.
"""

from .params import SLICE_LEVELS, PhantomParams, SpineParams, random_params, random_spine
from .slice import PhantomSlice, make_slice
from .structures import S as Structure
from .structures import tissue_labels
from .volume import COVERAGES, PhantomVolume, make_volume
from .writers import TRANSFER_SYNTAXES, make_demo_study, write_dicom_series, write_nifti

__all__ = [
    "COVERAGES",
    "SLICE_LEVELS",
    "TRANSFER_SYNTAXES",
    "PhantomParams",
    "PhantomSlice",
    "PhantomVolume",
    "SpineParams",
    "Structure",
    "make_demo_study",
    "make_slice",
    "make_volume",
    "random_params",
    "random_spine",
    "tissue_labels",
    "write_dicom_series",
    "write_nifti",
]
