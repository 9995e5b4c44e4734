"""Offscreen RGB + depth + segmentation rendering of one fixed MuJoCo camera in two passes.

:class:`mujoco.Renderer` needs three passes for the three images (colour, depth, segmentation). The
colour pass already fills the depth buffer, so here colour and depth are read from one pass and only
the segmentation needs a second (flat id-colour) pass: a third less time per frame on CPU rendering.

Creating an OpenGL context costs ~10 ms on OSMesa and its first frame ~30 ms more (the software
rasteriser compiles its pipeline per context), so a caller that builds many short-lived scenes (the data
engine: one scene per image) creates one :class:`GLContext` and hands it to every renderer.
"""

from __future__ import annotations

import sys
import weakref

import mujoco
import numpy as np

from spatialvlm_ros.errors import SimulationError


class GLContext:
    """An offscreen OpenGL context (OSMesa or EGL, as ``MUJOCO_GL`` says) that several renderers may share.

    Renderers given this context create their GL objects in it and free them in it; they never free
    the context itself. Closing the context first closes the renderers still using it, whose GL objects
    would otherwise outlive it. A context is current in one thread at a time: use one per thread.

    Args:
        width: width of the context's default framebuffer, pixels (renderers draw into their own
            framebuffer objects, sized by their model, so this need not match them).
        height: height, pixels.

    Raises:
        SimulationError: no OpenGL context could be created.
    """

    def __init__(self, width: int, height: int) -> None:
        self._renderers: weakref.WeakSet[RgbdRenderer] = weakref.WeakSet()
        try:
            self._gl: mujoco.GLContext | None = mujoco.GLContext(width, height)
        except Exception as err:  # any GL backend failure (osmesa/egl/glfw raise different types)
            raise SimulationError(
                f"cannot create an offscreen OpenGL context ({err}); set MUJOCO_GL=osmesa (CPU) or egl (GPU) "
                "before importing mujoco") from err

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._gl is None

    def make_current(self) -> None:
        """Make this the thread's current OpenGL context.

        Raises:
            SimulationError: called after :meth:`close`.
        """
        if self._gl is None:
            raise SimulationError("OpenGL context used after close()")
        self._gl.make_current()

    def _register(self, renderer: RgbdRenderer) -> None:
        self._renderers.add(renderer)

    def close(self) -> None:
        """Close the renderers still using this context, then free it (idempotent)."""
        if self._gl is None:
            return
        for renderer in list(self._renderers):
            renderer.close()
        self._gl.free()
        self._gl = None

    def __enter__(self) -> GLContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_gl") and not sys.is_finalizing():   # no _gl: creating the context failed
            self.close()


class RgbdRenderer:
    """Renders colour, metric z-depth and a label image from one camera of a model.

    Args:
        model: the compiled model (its offscreen buffer must be at least ``width`` x ``height``).
        camera: camera name.
        width: image width, pixels.
        height: image height, pixels.
        geom_labels: (ngeom,) int label of each geom in the segmentation output (e.g. an object id, -1 for
            scenery); pixels where no geom is drawn read -1.
        gl_context: a context to render in, shared with other renderers and left open by :meth:`close`;
            default a new context of this renderer's own, freed by :meth:`close`.
        shadows: draw the lights' shadows; off skips the shadow-map pass, about half a frame on OSMesa.

    Raises:
        SimulationError: ``geom_labels`` of the wrong shape, unknown camera, no OpenGL context, or
            ``gl_context`` already closed.
    """

    def __init__(self, model: mujoco.MjModel, camera: str, width: int, height: int, geom_labels: np.ndarray, *,
                 gl_context: GLContext | None = None, shadows: bool = True) -> None:
        # Set first: close() (from __del__) runs even when __init__ fails part way.
        self._gl: GLContext | None = None
        self._context: mujoco.MjrContext | None = None
        self._owns_gl = gl_context is None
        if geom_labels.shape != (model.ngeom,):
            raise SimulationError(f"geom_labels must have one entry per geom ({model.ngeom}), got {geom_labels.shape}")
        self._model = model
        self._geom_labels = np.asarray(geom_labels, dtype=np.int32)
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self._camera.fixedcamid < 0:
            raise SimulationError(f"model has no camera {camera!r}")
        self._gl = GLContext(width, height) if gl_context is None else gl_context
        self._gl.make_current()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        self._gl._register(self)
        # Depth buffer read with 1 = near, 0 = far (reversed z, what MuJoCo uses for precision).
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        # Allocating the scene costs ~1.5 us per slot: size it to the model (the default options draw one
        # visual geom per model geom; the margin covers decor such as a selection point).
        self._scene = mujoco.MjvScene(model, maxgeom=model.ngeom + 16)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self._option = mujoco.MjvOption()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._raw_depth = np.empty((height, width), dtype=np.float32)
        self._ids = np.empty((height, width, 3), dtype=np.uint8)
        near = model.vis.map.znear * model.stat.extent
        far = model.vis.map.zfar * model.stat.extent
        # Inverse of the reversed-z perspective mapping, as in mujoco.Renderer: z = d / (buffer + c).
        self._c = np.float32(0.5 * (far + near) / (far - near) - 0.5)
        self._d = np.float32(far * near / (far - near))

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render the current state of ``data`` (poses must be up to date: mj_kinematics and mj_camlight).

        Returns:
            rgb (H, W, 3) uint8; depth (H, W) float32 z-depth in metres (distance along the optical axis);
            labels (H, W) int32 ``geom_labels`` of the geom seen at each pixel, -1 where none.

        Raises:
            SimulationError: called after :meth:`close` (or after its shared GL context was closed).
        """
        if self._context is None:
            raise SimulationError("render() called after close()")
        self._gl.make_current()
        # Bound on every frame: another renderer sharing the GL context may have bound its own framebuffer.
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        mujoco.mjv_updateScene(self._model, data, self._option, None, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._rgb, self._raw_depth, self._rect, self._context)

        flags = self._scene.flags.copy()
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = True
        self._scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = True
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._ids, None, self._rect, self._context)
        np.copyto(self._scene.flags, flags)

        # The id colour of a pixel encodes (scene geom segid + 1) in 24 bits, 0 = nothing drawn. One lookup
        # table maps it straight to the caller's label.
        ngeom = self._scene.ngeom
        segid_to_label = np.full(ngeom + 1, -1, dtype=np.int32)
        for g in self._scene.geoms[:ngeom]:
            if g.segid >= 0 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                segid_to_label[g.segid + 1] = self._geom_labels[g.objid]
        # OpenGL rows run bottom-up, images top-down: read every buffer flipped.
        ids = self._ids[::-1]
        if ngeom < 255:                   # the usual case: the id fits the red byte, skip the 24-bit decode
            segid = ids[..., 0]
        else:
            segid = np.minimum(ids[..., 0].astype(np.int32) | (ids[..., 1].astype(np.int32) << 8)
                               | (ids[..., 2].astype(np.int32) << 16), ngeom)
        labels = segid_to_label[segid]
        depth = self._d / (self._raw_depth[::-1] + self._c)
        return np.ascontiguousarray(self._rgb[::-1]), depth, labels

    def close(self) -> None:
        """Free this renderer's GL objects, and its GL context if it created it (idempotent)."""
        gl, context = self._gl, self._context
        self._gl = self._context = None                 # first: closing the GL context closes its renderers
        if context is not None:
            # Freed in their own GL context: in whichever one is current they would delete another
            # renderer's objects (those with the same ids) and corrupt its frames.
            gl.make_current()
            context.free()
        if gl is not None and self._owns_gl:
            gl.close()

    def __del__(self) -> None:
        # A simulator dropped without close() must still free its GL objects in its own context; not at
        # interpreter exit, when the GL bindings may already be torn down (and the process frees everything).
        if not sys.is_finalizing():
            self.close()
