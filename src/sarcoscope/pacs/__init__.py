"""sarcoscope.pacs: DICOM networking and DICOMweb (moves datasets and bytes; never analyses).

config (TOML nodes), dimse (C-ECHO/FIND/GET/MOVE/STORE), web (QIDO/WADO/STOW), scp (our
storage SCP), workflow (choose and retrieve the CT series, send results), queue + node
(``sarcoscope node``), audit (JSON-lines audit log), uids (UID validation), tls. The
composition with the analysis lives in ``sarcoscope.cli.pacs``; see docs/pacs.md.
"""
