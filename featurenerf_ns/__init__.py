"""FeatureNeRF, N3F and smooth distilled feature fields as a nerfstudio plugin."""

from featurenerf_ns.utils.error_hook import install_for_nerfstudio_cli

install_for_nerfstudio_cli()
