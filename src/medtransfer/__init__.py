"""medtransfer: transfer learning for medical image segmentation.

Which pretrained source and which transfer strategy work best at a given label budget, whether the gain is
statistically real, and a model that can be applied to new scans.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
