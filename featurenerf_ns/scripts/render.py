"""``featurenerf-render``: videos of a trained FeatureNeRF model, conditioned on the instance and source views you
choose (nerfstudio's ``ns-render`` has no way to say which object an image-conditioned NeRF should show).

    featurenerf-render orbit --load-config outputs/chair/featurenerf-tiny/<stamp>/config.yml \\
        [--instance <id>] [--source-views 0] [--image photo.png] [--frames 36] [--elevation 30] --out outputs/render
    featurenerf-render camera-path --load-config ... --camera-path-filename camera_paths/<name>.json --out ...

``orbit``: a ring of cameras around the object at the distance of its own cameras; ``camera-path``: a path saved from
the viewer's Render tab (its resolution and field of view). Writes under ``--out``: ``frames/<output>/00000.png`` ...
for each of ``--outputs`` (rgb, depth, accumulation, feature_pca, nerf_feature_pca), ``render.gif`` (the source
view, then the outputs side by side; make an MP4 from the frames with ``ffmpeg -i frames/rgb/%05d.png rgb.mp4``) and
``render.json`` (settings, conditioning, seconds per frame). The PCA colours are fitted once on the first source
view's render, so they are stable across frames. ``ns-render`` itself also works on these runs (``camera-path`` and
``interpolate``; it needs ffmpeg on PATH): it shows the first evaluated instance from the eval source view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from featurenerf_ns.cameras import pinhole_camera
from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_bytes, atomic_write_json
from featurenerf_ns.eval.providers import view_camera
from featurenerf_ns.scripts.export import load_featurenerf
from featurenerf_ns.utils.cli import make_console, progress_bar, run_subcommands
from featurenerf_ns.utils.images import gif_bytes, png_bytes, to_uint8
from featurenerf_ns.viewer.trajectory import (
    check_outputs,
    orbit_poses,
    path_cameras,
    render_trajectory,
    side_by_side,
)

CONSOLE = make_console()


@dataclass
class _Render:
    load_config: Path
    instance: Optional[str] = None
    """Instance to condition on (default: the first held-out instance the run evaluates)."""
    source_views: Tuple[int, ...] = (0,)
    """Its source views (the encoder's input; indices modulo its number of views)."""
    image: Optional[Path] = None
    """An image file used in place of the first source view (posed like that view)."""
    outputs: Tuple[str, ...] = ()
    """Per-frame outputs: rgb, depth, accumulation, feature_pca (distilled head), nerf_feature_pca (internal); none
    given: all but accumulation that the model has."""
    precision: str = "float32"
    """Render precision: float32 (as ns-eval) or auto (bfloat16 autocast on CPUs with bf16 instructions: faster)."""
    gif_scale: int = 2
    """Upscaling of the GIF's panels (nearest); the PNG frames keep the render size."""
    out: Path = Path("outputs/render")

    def _cameras(self, pipeline, cond) -> Tuple[list, float, str]:
        """(cameras, seconds of the video, what they are)."""
        raise NotImplementedError

    def main(self) -> None:
        from featurenerf_ns.viewer.conditionings import ConditioningCache, chosen_conditioning

        pipeline, step = load_featurenerf(self.load_config)
        dm, model = pipeline.datamanager, pipeline.model
        outputs = check_outputs(model, self.outputs)
        cond = chosen_conditioning(ConditioningCache(dm, model), self.instance, self.source_views, self.image, "render")
        inst, views = cond.instance, cond.views
        cameras, seconds, what = self._cameras(pipeline, cond)
        hw = (int(cameras[0].height), int(cameras[0].width))
        res = dm.instance(inst).hw[0]
        # the PCA's fit: the first source view at training resolution
        fit = pinhole_camera(*view_camera(dm.cat, inst, views[0], res), (res, res))
        t0 = time.perf_counter()
        with progress_bar(True, f"rendering {len(cameras)} frames", len(cameras)) as advance:
            with model.precision_override(self.precision):
                frames = render_trajectory(model, cond, cameras, fit, outputs, advance)
        per_frame = (time.perf_counter() - t0) / len(cameras)
        for name, imgs in frames.items():
            for i, img in enumerate(imgs):
                atomic_write_bytes(self.out / "frames" / name / f"{i:05d}.png", png_bytes(img))
        src = _letterbox(cond.sources.images[0, 0].permute(1, 2, 0).float().cpu().numpy(), hw)
        panels = [
            side_by_side([("source view", src)] + [(n, frames[n][i]) for n in outputs], self.gif_scale)
            for i in range(len(cameras))
        ]
        ms = max(20, int(1000 * seconds / len(cameras)))
        atomic_write_bytes(self.out / "render.gif", gif_bytes(np.stack(panels), scale=1, ms=ms))
        atomic_write_json(
            self.out / "render.json",
            {
                "config": str(self.load_config),
                "step": step,
                "instance": inst,
                "source_views": list(views),
                "image": str(self.image) if self.image else None,
                "cameras": what,
                "frames": len(cameras),
                "size": list(hw),
                "outputs": outputs,
                "precision": self.precision,
                "seconds_per_frame": round(per_frame, 3),
            },
        )
        CONSOLE.print(
            f"[green]render:[/green] {inst} from view(s) {', '.join(map(str, views))}, {len(cameras)} frames "
            f"({what}), {per_frame:.2f} s per frame -> {self.out}/render.gif, frames/"
        )


def _letterbox(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """(h, w, 3) float image scaled to fit inside ``hw`` (bilinear, aspect kept) and centred on black, for the GIF's
    source panel."""
    from PIL import Image

    if img.shape[:2] == hw:
        return img
    s = min(hw[0] / img.shape[0], hw[1] / img.shape[1])
    h, w = max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s))
    small = np.asarray(Image.fromarray(to_uint8(img)).resize((w, h), Image.Resampling.BILINEAR))
    out = np.zeros((*hw, 3), np.float32)
    y, x = (hw[0] - h) // 2, (hw[1] - w) // 2
    out[y : y + h, x : x + w] = small.astype(np.float32) / 255.0
    return out


@dataclass
class Orbit(_Render):
    """A ring of cameras around the conditioned object."""

    frames: int = 36
    elevation: float = 30.0
    """Degrees above the ground plane (z = 0)."""
    resolution: int = 0
    """Frame size (0: the run's training resolution)."""
    seconds: float = 3.0
    """Length of one loop of the GIF."""

    def _cameras(self, pipeline, cond) -> Tuple[list, float, str]:
        dm = pipeline.datamanager
        poses = dm.cat.instance(cond.instance).poses
        res = self.resolution or dm.instance(cond.instance).hw[0]
        focal = view_camera(dm.cat, cond.instance, 0, res)[1]
        cams = [pinhole_camera(c2w, focal, (res, res)) for c2w in orbit_poses(poses, self.frames, self.elevation)]
        return cams, self.seconds, f"orbit at {self.elevation:g} degrees"


@dataclass
class CameraPath(_Render):
    """A camera path saved from nerfstudio's viewer (Render tab)."""

    camera_path_filename: Path = Path("camera_path.json")

    def _cameras(self, pipeline, cond) -> Tuple[list, float, str]:
        cameras, seconds = path_cameras(self.camera_path_filename)
        return [cameras[i : i + 1] for i in range(len(cameras))], seconds, str(self.camera_path_filename)


def entrypoint() -> None:
    run_subcommands(
        {"orbit": Orbit, "camera-path": CameraPath},
        "Videos of a trained FeatureNeRF model (RGB, depth, feature PCA) for a chosen conditioning.",
        (FeatureNeRFDataError,),
    )


if __name__ == "__main__":
    entrypoint()
