import numpy as np
import pytest

from featurenerf_ns.data.procedural import geometry as g


@pytest.mark.parametrize(
    "mesh",
    [
        g.box((0.1, 0.2, 0.3), (1, 2, 0.5)),
        g.cylinder((0, 0, 0), (0.3, 0.2, 1.0), 0.1),
        g.loft([(0, 0, 0), (1, 0, 0.1), (2, 0, 0)], [0.2, (0.3, 0.1), 0.05]),
        g.revolve([(0.1, 0.0), (0.3, 0.2), (0.05, 0.9)]),
        g.torus((0, 0, 0), (1, 0, 0), 0.5, 0.1),
        g.sphere((1, 1, 1), 0.3),
    ],
)
def test_primitives_are_closed_and_outward(mesh):
    assert mesh.is_watertight
    assert mesh.volume > 0  # outward orientation gives a positive signed volume


def test_box_volume_and_bounds():
    m = g.box((0, 0, 0), (1, 2, 3))
    assert np.isclose(m.volume, 6.0)
    np.testing.assert_allclose(m.bounds, [[-0.5, -1, -1.5], [0.5, 1, 1.5]])
