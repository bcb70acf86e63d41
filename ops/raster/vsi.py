"""Small files by URI, local or remote, through GDAL's virtual file systems.

An image's RPC may sit beside it in a sidecar (``.geom``, ``RPC_*.XML``...),
and the image may be local, on S3, or behind HTTP. Remote files are read by
the same GDAL that reads the image (rasterio's), through its virtual file
systems, so one configuration serves both: credentials from GDAL's usual
chain (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE`` and ``~/.aws`` files,
instance and container roles, web identity), endpoints from
``AWS_S3_ENDPOINT``/``AWS_HTTPS``/``AWS_VIRTUAL_HOSTING``, and the options a
``rasterio.Env`` sets.

Names: ``s3://b/k`` is read as ``/vsis3/b/k``, ``gs://`` as ``/vsigs/``,
``az://`` as ``/vsiaz/``, ``http(s)://`` as ``/vsicurl/http(s)://``; a
``/vsi...`` path is taken as given; anything else is a local path (read with
Python's own file functions). Folder and file names of virtual paths are
split as POSIX strings, never through ``pathlib`` (which would fold the
``//`` of a URL).

A server that accepts connections and never answers must fail a read, not
hang it: :func:`remote_timeouts` gives GDAL's HTTP requests a connect and a
total timeout (:data:`REMOTE_CONNECT_TIMEOUT_S`, :data:`REMOTE_TIMEOUT_S`)
wherever ``GDAL_HTTP_CONNECTTIMEOUT``/``GDAL_HTTP_TIMEOUT`` are not configured.

GDAL's ``VSIStatExL``, ``VSIFOpenExL``/``VSIFReadL`` and ``VSIReadDirEx`` are
called through ctypes. Their symbols are looked up through rasterio's
extension module, whose dependencies include libgdal: it is the library
rasterio has loaded, not a second copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Prefixes of remote URIs and the GDAL virtual file system that reads each.
_SCHEMES = (
    ("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/"),
    ("http://", "/vsicurl/http://"), ("https://", "/vsicurl/https://"),
)
#: An RPC sidecar is a few kB; this bounds what a wrong name can make us read.
MAX_SIDECAR_BYTES = 64 * 1024 * 1024
#: A folder listing is bounded too (an S3 prefix may hold millions of keys).
MAX_LISTED_NAMES = 100_000
#: Seconds GDAL may take to connect to a remote server, and for one whole request,
#: where the GDAL options say nothing.
REMOTE_CONNECT_TIMEOUT_S = 10
REMOTE_TIMEOUT_S = 60
_CHUNK_BYTES = 1 << 20
_STAT_BUFFER_BYTES = 512  # larger than VSIStatBufL (struct stat64) on every platform
_VSI_STAT_EXISTS_FLAG = 0x1
_VSI_STAT_NATURE_FLAG = 0x2


def gdal_path(uri: str | Path) -> str:
    """The name GDAL opens for ``uri``: a ``/vsi...`` path for a remote URI, else as given."""
    text = str(uri)
    for scheme, prefix in _SCHEMES:
        if text.startswith(scheme):
            return prefix + text[len(scheme):]
    return text


def is_virtual(path: str | Path) -> bool:
    """True for a path GDAL resolves itself (``/vsis3/...``, or a remote URI)."""
    return gdal_path(path).startswith("/vsi")


def parent(path: str) -> str:
    """The folder holding ``path`` (a virtual path is split as a POSIX string)."""
    return posixpath.dirname(path) if is_virtual(path) else str(Path(path).parent)


def name(path: str) -> str:
    """The last component of ``path``."""
    return posixpath.basename(path) if is_virtual(path) else Path(path).name


def join(folder: str, file_name: str) -> str:
    """``file_name`` inside ``folder``."""
    return posixpath.join(folder, file_name) if is_virtual(folder) else str(Path(folder) / file_name)


@contextlib.contextmanager
def remote_timeouts(path: str | Path) -> Iterator[None]:
    """GDAL HTTP timeouts for the reads inside, for a remote ``path``, unless configured."""
    if not is_virtual(path):
        yield
        return
    lib = _gdal()
    defaults = {"GDAL_HTTP_CONNECTTIMEOUT": REMOTE_CONNECT_TIMEOUT_S,
                "GDAL_HTTP_TIMEOUT": REMOTE_TIMEOUT_S}
    unset = {key: str(value) for key, value in defaults.items()
             if lib.CPLGetConfigOption(key.encode(), None) is None}
    if not unset:
        yield
        return
    # Only these options, set and unset by hand: a rasterio.Env here would also copy the
    # process's AWS settings (endpoint, credentials) into GDAL's config for good.
    for key, value in unset.items():
        lib.CPLSetThreadLocalConfigOption(key.encode(), value.encode())
    try:
        yield
    finally:
        for key in unset:
            lib.CPLSetThreadLocalConfigOption(key.encode(), None)


def is_file(path: str) -> bool:
    """Whether a file exists at ``path``; a folder or a missing object gives False."""
    if not is_virtual(path):
        return Path(path).is_file()
    lib = _gdal()
    buf = ctypes.create_string_buffer(_STAT_BUFFER_BYTES)
    flags = _VSI_STAT_EXISTS_FLAG | _VSI_STAT_NATURE_FLAG
    if lib.VSIStatExL(gdal_path(path).encode(), buf, flags) != 0:
        return False
    # A folder (an object store prefix) stats too; it is the one that lists entries. (The
    # stat buffer's st_mode would say so, but its layout differs between platforms.)
    listing = lib.VSIReadDirEx(gdal_path(path).encode(), 1)
    if listing:
        lib.CSLDestroy(listing)
        return False
    return True


def read_bytes(path: str, limit: int = MAX_SIDECAR_BYTES) -> bytes:
    """The bytes of a file, at most ``limit``; OSError naming the file and GDAL's reason."""
    if not is_virtual(path):
        with open(path, "rb") as f:
            # read(n) allocates n bytes first: a 1 GiB limit must not cost 1 GiB per small file
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, limit) + 1)
    else:
        data = _read_virtual(gdal_path(path), limit)
    if len(data) > limit:
        raise OSError(f"{path}: larger than {limit} bytes; expected a small RPC sidecar file")
    return data


def read_head(path: str, n_bytes: int) -> bytes:
    """The first ``n_bytes`` of a file (fewer when it is shorter), e.g. to sniff its format."""
    if not is_virtual(path):
        with open(path, "rb") as f:
            return f.read(n_bytes)
    return _read_virtual(gdal_path(path), n_bytes)[:n_bytes]


def list_names(folder: str) -> list[str]:
    """Names of the entries of a folder (files and sub-folders), unsorted."""
    if not is_virtual(folder):
        return os.listdir(folder)  # never lists "." and ".."
    lib = _gdal()
    listing = lib.VSIReadDirEx(gdal_path(folder).encode(), MAX_LISTED_NAMES)
    if not listing:
        return []
    try:
        names = []
        for i in range(MAX_LISTED_NAMES):
            entry = listing[i]
            if entry is None:
                break
            if entry not in (b".", b".."):
                names.append(entry.decode("utf-8", errors="replace"))
        return names
    finally:
        lib.CSLDestroy(listing)


def _read_virtual(path: str, limit: int) -> bytes:
    lib = _gdal()
    lib.VSIErrorReset()
    handle = lib.VSIFOpenExL(path.encode(), b"rb", 1)
    if not handle:
        reason = (lib.VSIGetLastErrorMsg() or b"").decode("utf-8", errors="replace")
        raise OSError(f"{path}: GDAL cannot open it ({reason or 'no such file'}); check the "
                      "name and the credentials (AWS_* variables, AWS_PROFILE, instance role)")
    try:
        chunks: list[bytes] = []
        total = 0
        buf = ctypes.create_string_buffer(_CHUNK_BYTES)
        while total <= limit:
            n = int(lib.VSIFReadL(buf, 1, min(_CHUNK_BYTES, limit + 1 - total), handle))
            chunks.append(buf.raw[:n])
            total += n
            if n == 0:
                break
        return b"".join(chunks)
    finally:
        lib.VSIFCloseL(handle)


@functools.cache
def _gdal() -> Any:
    """rasterio's libgdal, with the prototypes of the few VSI functions used here."""
    import rasterio._base  # the extension module links libgdal (importing rasterio installed
    # its GDAL error handler: messages go to logging)

    lib = ctypes.CDLL(rasterio._base.__file__)
    lib.VSIStatExL.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.VSIStatExL.restype = ctypes.c_int
    lib.VSIFOpenExL.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.VSIFOpenExL.restype = ctypes.c_void_p
    lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    lib.VSIFReadL.restype = ctypes.c_size_t
    lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
    lib.VSIFCloseL.restype = ctypes.c_int
    lib.VSIReadDirEx.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.VSIReadDirEx.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.CSLDestroy.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.CSLDestroy.restype = None
    lib.VSIErrorReset.argtypes = []
    lib.VSIErrorReset.restype = None
    lib.VSIGetLastErrorMsg.argtypes = []
    lib.VSIGetLastErrorMsg.restype = ctypes.c_char_p
    lib.CPLGetConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.CPLGetConfigOption.restype = ctypes.c_char_p
    lib.CPLSetThreadLocalConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.CPLSetThreadLocalConfigOption.restype = None
    return lib
