"""Runs inside Slicer's Python: the bundled engine imports and renders correct path lengths.

The full engine test suite runs outside Slicer with `make test`; this checks the
engine as Slicer packages it (torch from the PyTorch extension).
"""

import importlib.util
import unittest


@unittest.skipUnless(importlib.util.find_spec("torch"), "torch is not installed yet (the module installs it on first use)")
class SOPIEngineTest(unittest.TestCase):
    def test_cube_thickness_along_the_principal_ray(self):
        import torch

        from sopi.drr import Projector
        from sopi.geometry import CArmGeometry, nominal_view
        from sopi.volume import Volume

        world_from_index = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
        cube = Volume(torch.ones(20, 20, 20), world_from_index)  # 40 mm thick
        geometry = CArmGeometry(1000.0, 9, 9, (1.0, 1.0), source_to_isocenter_mm=600.0)
        pose = nominal_view("ap", cube.center_world, 600.0).camera_from_world
        image = Projector(cube, geometry, step_mm=0.25)(pose)
        self.assertAlmostEqual(float(image[4, 4]), 40.0, delta=0.2)


if __name__ == "__main__":
    unittest.main()
