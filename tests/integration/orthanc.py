"""A real Orthanc PACS and dcmtk for the PACS integration tests.

``ensure_peers()`` installs the Debian packages ``orthanc orthanc-dicomweb dcmtk`` with apt-get
when ``Orthanc``/``storescu`` are missing (and we are root); in CI a failure FAILS the run
(``conftest.require``). ``OrthancServer`` starts Orthanc with its own temporary configuration,
storage and free ports, the DICOMweb plugin enabled and our receiver registered as a modality
(so C-MOVE works). Orthanc 1.10 has no bind-address option (its ``--config`` dump documents
none): both ports listen on all interfaces, but it serves only loopback clients — HTTP by
``RemoteAccessAllowed: false``, DICOM by accepting only registered AE titles from their
registered address 127.0.0.1 (``DicomCheckModalityHost``, no ``DicomAlwaysAllow*``). Helpers load studies with dcmtk's ``storescu``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
ORTHANC_AET = "ORTHANC"
OUR_AET = "SARCOSCOPE"


def _have_peers() -> bool:
    return all(shutil.which(t) for t in ("Orthanc", "storescu", "findscu", "movescu", "dsrdump", "dcmodify")) and (
        dicomweb_plugin() is not None
    )


def dicomweb_plugin() -> Path | None:
    for d in PLUGIN_DIRS:
        for p in sorted(d.glob("libOrthancDicomWeb.so*")) if d.is_dir() else []:
            return p
    return None


def ensure_peers() -> None:
    """Install Orthanc + DICOMweb plugin + dcmtk if missing; require() them (fail in CI)."""
    if not _have_peers() and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "orthanc", "orthanc-dicomweb", "dcmtk"],
            env=env, capture_output=True, timeout=900,
        )
    require(_have_peers(), "Orthanc, its DICOMweb plugin and dcmtk (apt-get install orthanc orthanc-dicomweb dcmtk)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OrthancServer:
    root: Path
    receiver_port: int
    dicom_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen | None = None
    aet: str = ORTHANC_AET

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict:
        return {
            "Name": "sarcoscope-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            # Orthanc 1.10 has no option to bind its DICOM or HTTP port to one address (both
            # listen on all interfaces). What it can do: answer only registered modalities, and
            # only from their registered address (all 127.0.0.1); HTTP only to local clients.
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomModalities": {
                "sarcoscope": [OUR_AET, "127.0.0.1", self.receiver_port],
                "storescu": ["STORESCU", "127.0.0.1", 1],
                "findscu": ["FINDSCU", "127.0.0.1", 1],
                "sarconode": ["SARCONODE", "127.0.0.1", 1],  # `sarcoscope node` sending results
            },
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "StableAge": 1,
            "SaveJobs": False,
            "DicomScuTimeout": 10,
            "OverwriteInstances": False,
            "DeidentifyLogs": True,
            "ConcurrentJobs": 1,
        }

    def start(self) -> "OrthancServer":
        self.root.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(3):  # a free port can be taken between choosing and binding: retry
            self.dicom_port, self.http_port = free_port(), free_port()
            cfg = self.root / "orthanc.json"
            cfg.write_text(json.dumps(self.config(), indent=1))
            log = open(self.root / "orthanc.log", "ab")
            self.proc = subprocess.Popen(["Orthanc", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.get("/system")
                    if _port_open(self.dicom_port):
                        return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.1)
            last = (self.root / "orthanc.log").read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"Orthanc did not start; log tail:\n{last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    # -- REST helpers (independent of our code) ----------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return rsp.read()

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path)

    def delete(self, path: str) -> None:
        self._request("DELETE", path)

    def post(self, path: str, body: bytes):
        return json.loads(self._request("POST", path, body))

    def clear(self) -> None:
        for p in self.get("/patients"):
            self.delete(f"/patients/{p}")

    def study_id(self, study_uid: str) -> str | None:
        found = self.post("/tools/lookup", study_uid.encode())
        ids = [f["ID"] for f in found if f["Type"] == "Study"]
        return ids[0] if ids else None

    def series_in_study(self, study_uid: str) -> list[dict]:
        """[{'uid','modality','description','instances':[orthanc ids], 'manufacturer'}]"""
        sid = self.study_id(study_uid)
        if sid is None:
            return []
        out = []
        for s in self.get(f"/studies/{sid}/series"):
            tags = s["MainDicomTags"]
            out.append({
                "uid": tags.get("SeriesInstanceUID"), "modality": tags.get("Modality"),
                "description": tags.get("SeriesDescription", ""), "instances": s["Instances"],
                "manufacturer": tags.get("Manufacturer", ""),
            })
        return out

    def instance_file(self, instance_id: str, dest: Path) -> Path:
        dest.write_bytes(self.get_bytes(f"/instances/{instance_id}/file"))
        return dest


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


#: storescu option that proposes a compressed transfer syntax (sent unchanged, never transcoded).
STORESCU_SYNTAX_FLAGS = {
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.5": "-xr",  # RLE lossless
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless SV1
}


def storescu(server: OrthancServer, files: list[Path], *, keep_syntax: bool = True, aet: str = "STORESCU") -> None:
    """Send files with dcmtk's storescu; compressed files are offered in their own syntax
    (e.g. ``-xv`` for JPEG 2000 lossless: storescu cannot transcode them)."""
    from pydicom import dcmread

    cmd = ["storescu", "-aet", aet, "-aec", server.aet]
    if keep_syntax and files:
        ts = str(dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if ts in STORESCU_SYNTAX_FLAGS:
            cmd.append(STORESCU_SYNTAX_FLAGS[ts])
    cmd += ["127.0.0.1", str(server.dicom_port), *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-2000:]}")


def prepare_liver_dome(src: Path, dest: Path, *, study_uid: str, series_uid: str,
                       patient_id: str = "LIVERDOME", accession: str = "LD0001") -> list[Path]:
    """Copies of the liver-dome series with the empty UIDs filled in by dcmodify (from the file
    meta for SOP class/instance; one new study/series UID), ready for a PACS."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src.glob("*.dcm")):
        copy = dest / f.name
        shutil.copyfile(f, copy)
        out.append(copy)
    for copy in out:
        meta = subprocess.run(["dcmdump", "-q", "-Un", "-M", "+P", "0002,0002", "+P", "0002,0003", str(copy)],
                              capture_output=True, text=True, check=True).stdout
        sop_class = _dump_value(meta, "0002,0002")
        sop_uid = _dump_value(meta, "0002,0003")
        subprocess.run(
            ["dcmodify", "-nb", "-q",
             "-i", f"(0008,0016)={sop_class}", "-i", f"(0008,0018)={sop_uid}",
             "-i", f"(0020,000d)={study_uid}", "-i", f"(0020,000e)={series_uid}",
             "-i", f"(0010,0020)={patient_id}", "-i", f"(0008,0050)={accession}",
             "-i", "(0010,0010)=Liver^Dome",
             str(copy)],
            check=True, capture_output=True, timeout=60,
        )
    return out


def _dump_value(dump: str, tag: str) -> str:
    for line in dump.splitlines():
        if line.startswith(f"({tag})") and "[" in line:
            return line.split("[", 1)[1].split("]", 1)[0]
    raise ValueError(f"tag {tag} not in dcmdump output:\n{dump}")


@pytest.fixture(scope="session")
def pacs_peers() -> None:
    ensure_peers()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, pacs_peers) -> OrthancServer:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), receiver_port=free_port()).start()
    yield server
    server.stop()


def write_phantom_series(
    out_dir: Path, n_slices: int = 7, *, seed: int = 0, study_uid: str | None = None,
    patient_id: str = "PHANTOM-1", accession: str = "PH0001", modality: str = "CT",
    distinct_slices: int = 7, image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    description: str = "PHANTOM ABDOMEN 3mm",
) -> tuple[list[Path], str, str]:
    """A synthetic abdominal series (sarcoscope.phantom slices around L3) written with pydicom.

    ``distinct_slices`` phantom slices are rendered and reused cyclically, so a 300-slice
    benchmark study costs a few renders. Returns (files, study UID, series UID).
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from sarcoscope.phantom import make_slice, random_params

    params = random_params(np.random.default_rng(seed))
    centre = distinct_slices // 2
    slices = [make_slice(params, "L3", z_offset_mm=3.0 * (i - centre)) for i in range(distinct_slices)]
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    rows, cols = slices[0].hu.shape
    dy, dx = slices[0].pixel_spacing_mm
    files = []
    for k in range(n_slices):
        ph = slices[k % distinct_slices]
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Phantom^Test", patient_id, accession
        ds.PatientSex = params.sex
        ds.PatientSize = f"{params.height_m:.2f}"
        ds.PatientBirthDate, ds.StudyDate, ds.StudyTime, ds.StudyID = "19700101", "20240315", "101500", "1"
        ds.ReferringPhysicianName, ds.PositionReferenceIndicator = "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 3, k + 1
        ds.SeriesDescription, ds.Manufacturer = description, "sarcoscope-phantom"
        ds.ImageType = list(image_type)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(cols - 1) * dx / 2, -(rows - 1) * dy / 2, -150.0 + 3.0 * k]
        ds.PixelSpacing, ds.SliceThickness = [f"{dy:.6f}", f"{dx:.6f}"], "3"
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = (-1024, 1) if modality == "CT" else (0, 1)
        stored = np.clip(np.rint(ph.hu) + (1024 if modality == "CT" else 0), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        path = out_dir / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files, study_uid, series_uid


def write_phantom_study(
    out_dir: Path, *, seed: int = 0, n_slices: int = 24, transfer_syntax: str = "explicit-le",
    accession: str = "PH0002", patient_id: str | None = None, coverage: str | None = None,
) -> dict:
    """A phantom study written by the phantom stage (``make_volume`` + ``write_dicom_series``),
    with the accession number set by dcmtk's dcmodify. ``coverage=None`` renders L2–L4 only
    (fast); a named coverage renders that range. Returns files, UIDs and the true L3 index."""
    import numpy as np

    from sarcoscope.phantom import make_volume, random_params, write_dicom_series

    params = random_params(np.random.default_rng(seed), seed=seed)
    if coverage is None:
        from sarcoscope.phantom.anatomy import Subject

        spine = Subject(params).spine
        z = (spine.by_name("L4").z_mm, spine.by_name("L2").z_mm)
        pv = make_volume(params, z_range_mm=(min(z), max(z)), n_slices=n_slices)
    else:
        pv = make_volume(params, coverage=coverage, n_slices=n_slices)
    files = write_dicom_series(pv.volume, out_dir, transfer_syntax=transfer_syntax, patient_id=patient_id)
    subprocess.run(["dcmodify", "-nb", "-q", "-i", f"(0008,0050)={accession}", *map(str, files)],
                   check=True, capture_output=True, timeout=300)
    from pydicom import dcmread

    ds = dcmread(files[0], stop_before_pixels=True)
    return {"files": files, "study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID),
            "n": len(files), "l3_index": pv.l3_index, "ts": str(ds.file_meta.TransferSyntaxUID)}
