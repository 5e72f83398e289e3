"""The viewer's encoded conditionings: the source views of an instance (optionally with a user image in place of the
first one) and their encoder maps, encoded once and kept in a small LRU keyed by what they depend on."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional, Tuple

import torch

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.utils.weights_key import weights_key
from featurenerf_ns.viewer.inputs import Conditioning, ViewerInputError, load_user_image


class ConditioningCache:
    """``get(instance, views, image)`` -> the :class:`Conditioning` of ``instance``'s source ``views``, encoded by
    the model's encoder (in eval mode) only when not cached. The key holds the image file's mtime and the
    encoder's weights key (:func:`~featurenerf_ns.utils.weights_key.weights_key`), so an edited image or a training
    update re-encodes."""

    def __init__(self, datamanager, model, size: int = 8) -> None:
        self._dm, self._model, self.size = datamanager, model, size
        self._items: "OrderedDict[tuple, Conditioning]" = OrderedDict()

    @torch.no_grad()
    def get(self, instance: str, views: Tuple[int, ...], image: Optional[Path]) -> Conditioning:
        m = self._model
        key = (
            instance,
            views,
            str(image) if image else "",
            image.stat().st_mtime if image and image.is_file() else 0,
            weights_key(m.encoder.parameters()),  # changes when training updates the encoder
        )
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        it = self._dm.instance(instance)
        sources = self._dm.sources([it], torch.tensor([views]))
        if image is not None:
            img = load_user_image(image, it.hw).to(sources.images)
            sources = sources._replace(images=torch.cat([img[None, None], sources.images[:, 1:]], dim=1))
        was_training = m.encoder.training  # (GUI callbacks can run while ns-train has the model in train mode)
        m.encoder.eval()
        try:
            maps = m.encoder(sources.images.flatten(0, 1).to(m.device))
        finally:
            m.encoder.train(was_training)
        cond = Conditioning(key, instance, views, sources.to(m.device), maps)
        self._items[key] = cond
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return cond


def chosen_conditioning(
    conds: ConditioningCache, instance: Optional[str], views: Tuple[int, ...], image: Optional[Path], what: str
) -> Conditioning:
    """The conditioning a command-line tool (``what``, e.g. ``export``) was given: ``instance`` (default: the first
    held-out instance the run evaluates), its source ``views`` (modulo its number of views), ``image`` in place of
    the first one; a one-line :class:`FeatureNeRFDataError` for an unknown instance or an unusable image."""
    dm = conds._dm
    inst = instance or dm.eval_ids[0]
    rec = dm.cat.named_instance(inst, f"{what}: --instance")
    try:
        return conds.get(inst, tuple(v % len(rec.poses) for v in views), image)
    except ViewerInputError as e:
        raise FeatureNeRFDataError(str(e)) from None
