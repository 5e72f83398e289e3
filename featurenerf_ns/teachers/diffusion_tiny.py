"""The offline stand-in of a Stable Diffusion v1 pipeline: a tiny random SD-shaped U-Net / VAE / CLIP text encoder
built from configs (no files, no network) with a file-free hashing tokenizer, and a writer of any such set of
components as a diffusers-layout directory (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``) that
:class:`~featurenerf_ns.teachers.diffusion.DiffusionTeacher` loads with ``weights=<dir>``. Used by the
``random-tiny`` weights and by the tests; real weights come from a local directory or the hub.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import torch

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")
"""The component folders of a diffusers Stable Diffusion directory that the teacher reads."""


# ------------------------------------------------------------------------------------------------ tokenizer
class HashWordTokenizer:
    """A file-free word-level tokenizer for the tiny random text encoder: lower-cased words are hashed (crc32) into
    the vocabulary, wrapped in BOS/EOS and padded with EOS to ``model_max_length`` (CLIP's layout)."""

    FILE = "hash_word_tokenizer.json"

    def __init__(self, vocab_size: int = 1000, model_max_length: int = 77):
        if vocab_size < 4 or model_max_length < 2:
            raise ValueError("HashWordTokenizer needs vocab_size >= 4 and model_max_length >= 2")
        self.vocab_size = int(vocab_size)
        self.model_max_length = int(model_max_length)
        self.bos_token_id = self.vocab_size - 2
        self.eos_token_id = self.pad_token_id = self.vocab_size - 1

    def word_id(self, word: str) -> int:
        return 1 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 3)

    def encode(self, text: str) -> List[int]:
        ids = [self.word_id(w) for w in re.findall(r"[a-z0-9]+", text.lower())][: self.model_max_length - 2]
        ids = [self.bos_token_id, *ids, self.eos_token_id]
        return ids + [self.pad_token_id] * (self.model_max_length - len(ids))

    def __call__(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """-> (B, model_max_length) int64 input ids."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def save_pretrained(self, directory: Union[str, Path]) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / self.FILE).write_text(
            json.dumps({"vocab_size": self.vocab_size, "model_max_length": self.model_max_length})
        )

    @classmethod
    def from_pretrained(cls, directory: Union[str, Path]) -> "HashWordTokenizer":
        meta = json.loads((Path(directory) / cls.FILE).read_text())
        return cls(int(meta["vocab_size"]), int(meta["model_max_length"]))


# ------------------------------------------------------------------------------------------------ tiny model
def tiny_components(seed: int = 0) -> Dict[str, Any]:
    """A tiny random SD-v1-shaped pipeline built from configs (no files, no network): 4-block U-Net (channels
    (8, 16, 32, 32), 2 layers per block, cross-attention), a 3-level VAE (1/4 downsampling, 4 latent channels), a
    2-layer CLIP text encoder (vocab 1000, 16 tokens) and a :class:`HashWordTokenizer`. Deterministic in ``seed``;
    the global RNG is left untouched. Returns {unet, vae, text_encoder, tokenizer}."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Any: for mypy the diffusers top-level names are its torch-less dummy placeholders (no nn.Module API)
        unet: Any = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16, 32, 32),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=2,
            norm_num_groups=4,
        )
        vae: Any = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=4,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=1000,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=16,
                bos_token_id=998,
                eos_token_id=999,
                pad_token_id=999,
            )
        )
    tokenizer = HashWordTokenizer(vocab_size=1000, model_max_length=16)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer}


def save_components(components: Dict[str, Any], directory: Union[str, Path]) -> Path:
    """Write {unet, vae, text_encoder, tokenizer} as a diffusers-style directory loadable with ``weights=<dir>``."""
    d = Path(directory)
    for name in SUBFOLDERS:
        if components.get(name) is not None:
            components[name].save_pretrained(d / name)
    return d
