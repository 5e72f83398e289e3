"""Diffusion teacher: Stable Diffusion v1 U-Net decoder features of a noised image (the paper's second teacher).

An image in [-1, 1] is VAE-encoded (latent mean x ``scaling_factor``), noised to ``timestep`` with the DDPM forward
process (``sqrt(abar_t) z + sqrt(1 - abar_t) eps``, one seeded noise draw shared by every image, so features do not
depend on batching), and denoised once by the U-Net conditioned on the CLIP text embedding of
``prompt_template.format(category=...)``. A hook reads one tensor of the U-Net decoder (``unet.up_blocks``) and the
rest of the forward pass is skipped. ``ensemble > 1`` averages the features over that many noise draws.

Which tensor (``up_block``, ``up_layer``): with ``up_layer=None`` the OUTPUT of ``unet.up_blocks[up_block]`` (after its
upsampler); with ``up_layer=j`` the INPUT of ``up_blocks[up_block].resnets[j]``, i.e. the decoder state concatenated
with its U-Net skip connection. For SD1.x (``block_out_channels`` (320, 640, 1280, 1280), 2 layers per block, so 3
resnets per up block), at input size S:

==========  ======================  =========================  =============
up_block    output (up_layer=None)  resnet inputs j = 0, 1, 2  at resolution
==========  ======================  =========================  =============
0           1280 ch at S/32         2560, 2560, 2560           S/64
1           1280 ch at S/16         2560, 2560, 1920           S/32
2           640 ch at S/8           1920, 1280, 960            S/16
3           320 ch at S/8           960, 640, 640              S/8
==========  ======================  =========================  =============

(Up blocks 0..2 end with a x2 upsampler, block 3 has none.) The paper's diffusion teacher reads "the 4th decoder
layer, 960 channels": no block *output* has 960 channels; 960 = 640 (decoder, upsampled) + 320 (skip from the first
encoder block) is the input of the first resnet of the 4th up block, so the default is ``up_block=3, up_layer=0``:
960 channels at 1/8 of the input, 64 x 64 x 960 at SD v1's native 512 px (the paper's 128 x 128 x 960 map
corresponds to a 1024 px input). ``up_block=2, up_layer=2`` is the other 960-channel tensor (at S/16);
``up_block=1, up_layer=None`` is the 1280-channel S/16 map often used for semantic correspondence.

Weights (``weights``): a local diffusers Stable Diffusion directory (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``; optional ``scheduler/``), loaded offline; a hub id such as ``runwayml/stable-diffusion-v1-5``
(online only); ``random-tiny`` (a seeded tiny random SD-shaped model built from configs, for tests). ``None`` is an
error: no diffusion weights are obtainable offline.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type

import torch
from torch import nn

from featurenerf_ns.teachers.base import Teacher, TeacherConfig, TeacherError
from featurenerf_ns.teachers.diffusion_tiny import HashWordTokenizer, tiny_components
from featurenerf_ns.weights.cache import sha256_file

TINY = "random-tiny"
DEFAULT_HUB_ID = "runwayml/stable-diffusion-v1-5"
NO_CATEGORY_PROMPT = "an object"
UNET_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.bin",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class DiffusionTeacherConfig(TeacherConfig):
    """Stable Diffusion v1 U-Net decoder features (see the module docstring for the layer table).

    Defaults: 512 px input (SD v1 native), ``up_block=3, up_layer=0`` -> 64 x 64 x 960 (1/8 of the input); the paper's
    map is 128 x 128 x 960 (a 1024 px input).
    """

    _target: Type = field(default_factory=lambda: DiffusionTeacher)
    name: str = "diffusion"
    weights: Optional[str] = None
    """Local diffusers SD directory (unet/, vae/, text_encoder/, tokenizer/), a hub id (online), or ``random-tiny``."""
    input_size: int = 512
    imagenet_norm: bool = False
    """Images are scaled to [-1, 1] (the VAE's range)."""
    timestep: int = 100
    """Noise level t of the DDPM forward process (the pipeline scheduler's betas; SD v1's scaled-linear
    0.00085..0.012 over 1000 steps when the directory has no scheduler/)."""
    up_block: int = 3
    """Index into ``unet.up_blocks`` (negative counts from the end)."""
    up_layer: Optional[int] = 0
    """None: the up block's output; j: the input of its resnet j (decoder state ++ skip connection)."""
    prompt_template: str = "a {category}"
    """Text conditioning; ``{category}`` is the class name (e.g. chair). No category -> ``an object``."""
    ensemble: int = 1
    """Number of noise draws whose features are averaged."""
    batch_size: int = 4


def read_geometry(unet: Any, vae_factor: int, up_block: int, up_layer: Optional[int]) -> Tuple[int, int, str]:
    """(channels, input pixels per cell, description) of the tensor read at ``up_block`` / ``up_layer`` of a diffusers
    ``UNet2DConditionModel`` behind a VAE that downsamples by ``vae_factor`` (works on a meta-device U-Net)."""
    ups = unet.up_blocks
    block = ups[up_block % len(ups)]
    n_down = sum(getattr(b, "downsamplers", None) is not None for b in unet.down_blocks)
    n_up_before = sum(getattr(b, "upsamplers", None) is not None for b in ups[: up_block % len(ups)])
    level = n_down - n_up_before  # log2 of the latent downsampling at the block's input
    if up_layer is None:
        level -= int(getattr(block, "upsamplers", None) is not None)
        dim = int(block.resnets[-1].out_channels)
        where = f"output ({dim} ch"
    else:
        dim = int(block.resnets[up_layer].in_channels)
        where = f"resnet {up_layer} input ({dim} ch = decoder + skip"
    return dim, vae_factor * 2**level, where


# ------------------------------------------------------------------------------------------------ teacher
class _Captured(Exception):
    """Raised by the read hook to stop the U-Net forward once the wanted tensor is captured."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


class DiffusionTeacher(Teacher):
    config: DiffusionTeacherConfig

    def __init__(self, config: DiffusionTeacherConfig, device: str = "cpu"):
        super().__init__(config, device)
        name = config.name
        if config.ensemble < 1:
            raise TeacherError(f"teacher {name}: ensemble must be >= 1 (got {config.ensemble})")
        self.weights_sha256: Optional[str] = None
        comps, source, self.tokenizer_kind, self.scheduler_source = self._load(config)
        # diffusers / transformers nn.Modules; typed Any: their sub-modules and configs are dynamic attributes
        self.unet: Any = comps["unet"]
        self.vae: Any = comps["vae"]
        self.text_encoder: Any = comps["text_encoder"]
        self.tokenizer = comps["tokenizer"]
        for m in (self.unet, self.vae, self.text_encoder):
            m.eval().requires_grad_(False).to(device)

        ups = self.unet.up_blocks
        if not -len(ups) <= config.up_block < len(ups):
            raise TeacherError(
                f"teacher {name}: up_block {config.up_block} out of range for a U-Net with {len(ups)} up "
                f"blocks (use 0..{len(ups) - 1})"
            )
        self.block_index = config.up_block % len(ups)
        block = ups[self.block_index]
        if config.up_layer is not None and not 0 <= config.up_layer < len(block.resnets):
            raise TeacherError(
                f"teacher {name}: up_layer {config.up_layer} out of range for up_block {self.block_index} "
                f"with {len(block.resnets)} resnets (use 0..{len(block.resnets) - 1} or None)"
            )
        n_train = len(self.alphas_cumprod)
        if not 0 <= config.timestep < n_train:
            raise TeacherError(f"teacher {name}: timestep {config.timestep} outside the scheduler's 0..{n_train - 1}")

        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.dim, self.stride_in_input, where = read_geometry(self.unet, vae_factor, self.block_index, config.up_layer)
        n_down = sum(getattr(b, "downsamplers", None) is not None for b in self.unet.down_blocks)
        multiple = vae_factor * 2**n_down
        if config.input_size % multiple:
            raise TeacherError(
                f"teacher {name}: input_size {config.input_size} is not a multiple of {multiple} (VAE x "
                f"U-Net downsampling); use e.g. {max(multiple, config.input_size // multiple * multiple)}"
            )
        self.label = (
            f"Stable Diffusion U-Net up_block {self.block_index} {where}, 1/{self.stride_in_input}), "
            f"t={config.timestep}, {source}, {config.input_size}px"
        )
        self._prompt_cache: Dict[str, torch.Tensor] = {}

    # -------------------------------------------------------------------------------------------- loading
    def _load(self, cfg: DiffusionTeacherConfig) -> Tuple[Dict[str, Any], str, str, str]:
        w = cfg.weights
        fix = (
            "pass weights=<local diffusers Stable Diffusion directory with unet/, vae/, text_encoder/, tokenizer/>, "
            f"a hub id such as {DEFAULT_HUB_ID} when online, or weights={TINY}"
        )
        if w is None:
            raise TeacherError(f"teacher {cfg.name}: no diffusion weights are obtainable offline; {fix}")
        if w == TINY:
            comps = tiny_components(cfg.seed)
            self.alphas_cumprod = self._alphas_cumprod(None)
            self.weights_sha256 = f"random-tiny-seed{cfg.seed}"
            return comps, f"random tiny weights, seed {cfg.seed}", "hash-words", "sd-v1-default"
        path = Path(w).expanduser()
        if path.exists():
            return self._load_dir(cfg, path)
        if _HUB_ID.match(w) and not w.startswith((".", "~")):
            return self._load_hub(cfg, w, fix)
        raise TeacherError(f"teacher {cfg.name}: weights dir {path} not found; {fix}")

    def _load_dir(self, cfg: DiffusionTeacherConfig, path: Path) -> Tuple[Dict[str, Any], str, str, str]:
        if not path.is_dir():
            raise TeacherError(
                f"teacher {cfg.name}: weights {path} is a file, not a diffusers directory; pass the "
                f"Stable Diffusion directory that holds unet/, vae/, text_encoder/, tokenizer/"
            )
        for sub in ("unet", "vae", "text_encoder"):
            if not (path / sub).is_dir():
                raise TeacherError(
                    f"teacher {cfg.name}: {path / sub} not found; pass a diffusers Stable Diffusion "
                    f"directory with unet/, vae/, text_encoder/, tokenizer/ (e.g. a save_pretrained pipeline)"
                )
        comps = self._from_pretrained(cfg, str(path), local=True, where=str(path))
        unet_file = next((path / "unet" / f for f in UNET_WEIGHT_FILES if (path / "unet" / f).is_file()), None)
        if unet_file is None:
            unet_file = next(iter(sorted((path / "unet").glob("*.safetensors"))), None)
        if unet_file is not None:
            self.weights_sha256 = sha256_file(unet_file)
        return comps, path.name, self._tok_kind, self._sched_src

    def _load_hub(self, cfg: DiffusionTeacherConfig, hub_id: str, fix: str) -> Tuple[Dict[str, Any], str, str, str]:
        comps = self._from_pretrained(cfg, hub_id, local=_hub_offline(), where=f"hub id {hub_id}", fix=fix)
        self.weights_sha256 = f"hub:{hub_id}"
        return comps, f"hub {hub_id}", self._tok_kind, self._sched_src

    def _from_pretrained(
        self, cfg: DiffusionTeacherConfig, src: str, local: bool, where: str, fix: Optional[str] = None
    ) -> Dict[str, Any]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        kw: Dict[str, Any] = dict(local_files_only=local)
        # without accelerate, diffusers warns and falls back to low_cpu_mem_usage=False anyway: ask for it directly
        dkw = dict(kw, low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
        comps: Dict[str, Any] = {}
        try:
            comps["unet"] = UNet2DConditionModel.from_pretrained(src, subfolder="unet", **dkw)
            comps["vae"] = AutoencoderKL.from_pretrained(src, subfolder="vae", **dkw)
            comps["text_encoder"] = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **kw)
        except Exception as e:  # noqa: BLE001 - any loader failure becomes one actionable line
            hint = (
                fix or "re-save it with the diffusers save_pretrained layout (unet/, vae/, text_encoder/, tokenizer/)"
            )
            offline = " (offline?)" if not os.path.isdir(src) else ""
            raise TeacherError(
                f"teacher {cfg.name}: cannot load Stable Diffusion from {where}{offline} ({_first_line(e)}); {hint}"
            ) from None
        comps["tokenizer"] = self._load_tokenizer(cfg, src, local, where, comps["text_encoder"])
        self._sched_src, sched = "sd-v1-default", None
        sched_dir = Path(src) / "scheduler"
        if sched_dir.is_dir() or not os.path.isdir(src):
            try:
                from diffusers import DDPMScheduler

                sched = DDPMScheduler.from_config(DDPMScheduler.load_config(src, subfolder="scheduler", **kw))
                self._sched_src = "pipeline"
            except Exception as e:  # noqa: BLE001
                if sched_dir.is_dir():
                    raise TeacherError(
                        f"teacher {cfg.name}: {sched_dir} is unreadable ({_first_line(e)}); fix or "
                        f"remove it (SD v1's scaled-linear schedule is then used)"
                    ) from None
        self.alphas_cumprod = self._alphas_cumprod(sched)
        return comps

    def _load_tokenizer(self, cfg: DiffusionTeacherConfig, src: str, local: bool, where: str, text_encoder: nn.Module):
        tok_dir = Path(src) / "tokenizer"
        if os.path.isdir(src) and (tok_dir / HashWordTokenizer.FILE).is_file():
            self._tok_kind = "hash-words"
            return HashWordTokenizer.from_pretrained(tok_dir)
        if os.path.isdir(src) and not tok_dir.is_dir():
            tcfg: Any = text_encoder.config
            if tcfg.vocab_size >= 10000:  # a real CLIP text encoder needs its real vocabulary
                raise TeacherError(
                    f"teacher {cfg.name}: {tok_dir} not found; copy the pipeline's tokenizer/ folder "
                    f"(CLIP vocab.json + merges.txt) next to text_encoder/"
                )
            self._tok_kind = "hash-words"
            return HashWordTokenizer(tcfg.vocab_size, tcfg.max_position_embeddings)
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(src, subfolder="tokenizer", local_files_only=local)
        except Exception as e:  # noqa: BLE001
            raise TeacherError(
                f"teacher {cfg.name}: cannot load the tokenizer of {where} ({_first_line(e)}); "
                f"provide tokenizer/ with the CLIP vocab.json + merges.txt"
            ) from None
        self._tok_kind = "clip"
        return tok

    @staticmethod
    def _alphas_cumprod(scheduler: Any) -> torch.Tensor:
        if scheduler is None:
            from diffusers import DDPMScheduler

            scheduler = DDPMScheduler(
                num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
            )
        return scheduler.alphas_cumprod.detach().double().cpu()

    # -------------------------------------------------------------------------------------------- features
    def prompt(self, category: Optional[str]) -> str:
        if not category:
            return NO_CATEGORY_PROMPT
        return self.config.prompt_template.format(category=str(category).replace("_", " "))

    def _text_embedding(self, prompt: str) -> torch.Tensor:
        """(1, L, D) CLIP last hidden state of ``prompt`` (cached per prompt)."""
        emb = self._prompt_cache.get(prompt)
        if emb is None or emb.device != self.device:
            if isinstance(self.tokenizer, HashWordTokenizer):
                ids = self.tokenizer([prompt])
            else:
                ids = self.tokenizer(
                    [prompt],
                    padding="max_length",
                    max_length=self.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids
            emb = self.text_encoder(ids.to(self.device))[0].float()
            self._prompt_cache[prompt] = emb
        return emb

    def _noise(self, shape: Tuple[int, ...]) -> torch.Tensor:
        """(ensemble, C, h, w) standard normal noise from ``seed`` (CPU generator: identical on every device)."""
        g = torch.Generator(device="cpu").manual_seed(int(self.config.seed))
        return torch.randn((self.config.ensemble, *shape), generator=g, dtype=torch.float32)

    def _read(self, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        block = self.unet.up_blocks[self.block_index]

        def grab_output(_module, _args, output):
            raise _Captured(output[0] if isinstance(output, tuple) else output)

        def grab_input(_module, args, kwargs):
            raise _Captured(args[0] if args else kwargs["input_tensor"])

        if self.config.up_layer is None:
            handle = block.register_forward_hook(grab_output)
        else:
            handle = block.resnets[self.config.up_layer].register_forward_pre_hook(grab_input, with_kwargs=True)
        try:
            self.unet(latents, t, encoder_hidden_states=cond, return_dict=False)
        except _Captured as c:
            return c.value
        finally:
            handle.remove()
        raise TeacherError(f"teacher {self.config.name}: up_block {self.block_index} was never run by the U-Net")

    def features(self, x: torch.Tensor, category: Optional[str] = None) -> torch.Tensor:
        """x (B, 3, S, S) in [-1, 1] -> (B, dim, S / stride, S / stride) float32."""
        dev, B = x.device, x.shape[0]
        vcfg = self.vae.config
        z = self.vae.encode(x.to(dev, torch.float32)).latent_dist.mean
        if getattr(vcfg, "shift_factor", None) is not None:
            z = z - vcfg.shift_factor
        z = z * vcfg.scaling_factor
        abar = float(self.alphas_cumprod[self.config.timestep])
        noise = self._noise(tuple(z.shape[1:])).to(dev)
        cond = self._text_embedding(self.prompt(category)).to(dev).expand(B, -1, -1)
        t = torch.full((B,), self.config.timestep, device=dev, dtype=torch.long)
        out = None
        for k in range(self.config.ensemble):
            zt = abar**0.5 * z + (1.0 - abar) ** 0.5 * noise[k : k + 1]
            f = self._read(zt, t, cond).float()
            out = f if out is None else out + f
        assert out is not None  # ensemble >= 1 (checked in __init__)
        return out / self.config.ensemble

    # -------------------------------------------------------------------------------------------- identity
    def map_size(self) -> Tuple[int, int]:
        n = self.config.input_size // self.stride_in_input
        return n, n

    def identity(self) -> Dict[str, Any]:
        ident = super().identity()
        ident.update(
            up_block=self.block_index,
            up_layer=self.config.up_layer,
            timestep=int(self.config.timestep),
            prompt_template=self.config.prompt_template,
            ensemble=int(self.config.ensemble),
            alpha_bar=round(float(self.alphas_cumprod[self.config.timestep]), 10),
            scheduler=self.scheduler_source,
            tokenizer=self.tokenizer_kind,
        )
        return ident
