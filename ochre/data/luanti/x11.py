"""The few X11 calls the recorder needs, through ctypes: find, place and focus the game's window,
press keys and move the mouse (XTEST, as a person's input would arrive), and read the window's pixels.

No X client package is needed beyond libX11 and libXtst, which the game's own packages pull in.
Legend: H W window size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

_ALL_PLANES = ctypes.c_ulong(0xFFFFFFFF)
_Z_PIXMAP = 2
_REVERT_TO_PARENT = 2
_CURRENT_TIME = 0


class X11Error(RuntimeError):
    """The X server or its libraries cannot be used; str(e) says which and what to install."""


class _XImage(ctypes.Structure):
    # The leading fields of Xlib's XImage (X11/Xlib.h); the rest is never read here.
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.POINTER(ctypes.c_ubyte)),
                ("byte_order", ctypes.c_int), ("bitmap_unit", ctypes.c_int),
                ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int), ("depth", ctypes.c_int),
                ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int)]


def _load(name: str, package: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name)
    if path is None:
        raise X11Error(f"lib{name} not found: install it with `apt-get install {package}`")
    return ctypes.CDLL(path)


class _XErrorEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("display", ctypes.c_void_p), ("resourceid", ctypes.c_ulong),
                ("serial", ctypes.c_ulong), ("error_code", ctypes.c_ubyte), ("request_code", ctypes.c_ubyte),
                ("minor_code", ctypes.c_ubyte)]


_last_error: list[str] = []
_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_XErrorEvent))
_IO_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_IO_EXIT_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


# Xlib's default handlers end the whole process on an error, such as reading the window of a game
# that has just crashed, or on a lost connection, such as an X server that died. These record the
# error instead; the call that failed then returns nothing and the recorder restarts the game.
@_ERROR_HANDLER
def _on_error(display, event):
    e = event.contents
    _last_error[:] = [f"X error {e.error_code} in request {e.request_code} on resource {e.resourceid:#x}"]
    return 0


@_IO_HANDLER
def _on_io_error(display):
    _last_error[:] = ["the connection to the X server was lost"]
    return 0


@_IO_EXIT_HANDLER
def _on_io_exit(display, data):
    return None


@functools.cache
def _bind():
    x, xtst = _load("X11", "libx11-6"), _load("Xtst", "libxtst6")
    x.XSetErrorHandler(_on_error)
    x.XSetIOErrorHandler(_on_io_error)
    x.XSetIOErrorExitHandler.argtypes = [ctypes.c_void_p, _IO_EXIT_HANDLER, ctypes.c_void_p]
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XDefaultRootWindow.restype = ctypes.c_ulong
    x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                             ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                             ctypes.POINTER(ctypes.c_uint)]
    x.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
    x.XFree.argtypes = [ctypes.c_void_p]
    x.XGetGeometry.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong)] + \
        [ctypes.POINTER(ctypes.c_int)] * 2 + [ctypes.POINTER(ctypes.c_uint)] * 4
    x.XMoveWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int]
    x.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
    x.XGetInputFocus.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_int)]
    x.XStringToKeysym.restype = ctypes.c_ulong
    x.XStringToKeysym.argtypes = [ctypes.c_char_p]
    x.XKeysymToKeycode.restype = ctypes.c_ubyte
    x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x.XGetImage.restype = ctypes.POINTER(_XImage)
    x.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                            ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
    x.XDestroyImage.argtypes = [ctypes.POINTER(_XImage)]
    x.XFlush.argtypes = [ctypes.c_void_p]
    x.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    xtst.XTestFakeRelativeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    return x, xtst


class Display:
    """One connection to an X display (":N"). Close it with close() or a `with` block."""

    def __init__(self, name: str):
        self._x, self._xtst = _bind()
        self._d = self._x.XOpenDisplay(name.encode())
        if not self._d:
            raise X11Error(f"cannot open X display {name}")
        self.root = self._x.XDefaultRootWindow(self._d)
        self._x.XSetIOErrorExitHandler(self._d, _on_io_exit, None)

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._d:
            self._x.XCloseDisplay(self._d)
            self._d = None

    def windows(self) -> list[tuple[int, str]]:
        """The root window's children that have a name: [(window id, name)]."""
        root, parent = ctypes.c_ulong(), ctypes.c_ulong()
        children, count = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
        if not self._x.XQueryTree(self._d, self.root, ctypes.byref(root), ctypes.byref(parent),
                                  ctypes.byref(children), ctypes.byref(count)):
            return []
        out = []
        for i in range(count.value):
            name = ctypes.c_char_p()
            if self._x.XFetchName(self._d, children[i], ctypes.byref(name)) and name.value is not None:
                out.append((int(children[i]), name.value.decode(errors="replace")))
                self._x.XFree(name)
        if children:
            self._x.XFree(children)
        return out

    def geometry(self, window: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a window relative to its parent."""
        root = ctypes.c_ulong()
        x, y = ctypes.c_int(), ctypes.c_int()
        w, h, border, depth = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
        self._x.XGetGeometry(self._d, window, ctypes.byref(root), ctypes.byref(x), ctypes.byref(y),
                             ctypes.byref(w), ctypes.byref(h), ctypes.byref(border), ctypes.byref(depth))
        return x.value, y.value, w.value, h.value

    def place(self, window: int, x: int, y: int) -> bool:
        """Move a window (no window manager runs, so nothing else would) and give it the keyboard;
        returns whether it has the keyboard now (not before the window is shown)."""
        self._x.XMoveWindow(self._d, window, x, y)
        self._x.XSetInputFocus(self._d, window, _REVERT_TO_PARENT, _CURRENT_TIME)
        self._x.XSync(self._d, 0)
        focus, revert = ctypes.c_ulong(), ctypes.c_int()
        self._x.XGetInputFocus(self._d, ctypes.byref(focus), ctypes.byref(revert))
        return focus.value == window

    def keycode(self, keysym: str) -> int:
        code = self._x.XKeysymToKeycode(self._d, self._x.XStringToKeysym(keysym.encode()))
        if code == 0:
            raise X11Error(f"the X server has no key for {keysym!r}")
        return code

    def key(self, code: int, down: bool) -> None:
        self._xtst.XTestFakeKeyEvent(self._d, code, int(down), _CURRENT_TIME)

    def move_mouse(self, dx: int, dy: int) -> None:
        self._xtst.XTestFakeRelativeMotionEvent(self._d, dx, dy, _CURRENT_TIME)

    def flush(self) -> None:
        self._x.XFlush(self._d)

    def grab(self, window: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The window's pixels in a rectangle as uint8 (height, width, 3) RGB."""
        image = self._x.XGetImage(self._d, window, x, y, width, height, _ALL_PLANES, _Z_PIXMAP)
        if not image:
            raise X11Error(f"cannot read the pixels of window {window:#x}: {' '.join(_last_error) or 'no reason'}")
        try:
            im = image.contents
            if im.bits_per_pixel != 32:
                raise X11Error(f"the X display has {im.bits_per_pixel}-bit pixels; start it with depth 24")
            raw = np.ctypeslib.as_array(im.data, shape=(im.height, im.bytes_per_line))
            bgrx = raw[:, :width * 4].reshape(height, width, 4)
            return bgrx[..., 2::-1].copy()
        finally:
            self._x.XDestroyImage(image)
