"""Synthetic longitudinal (4D) lesion cohorts: real or phantom anatomy, inserted lesions that grow,
shrink, vanish or appear, tissue displaced by growth, and a new acquisition per session.

Public API: :func:`generate_cohort` (writes a BIDS-like cohort with ground truth) and
:func:`export_nnunet` (nnU-Net raw datasets for training).
"""

from synthetic.cohort import GROUNDTRUTH_SCHEMA, generate_cohort, plan_cohort, render_session
from synthetic.nnunet_export import export_nnunet

__all__ = ["GROUNDTRUTH_SCHEMA", "export_nnunet", "generate_cohort", "plan_cohort", "render_session"]
