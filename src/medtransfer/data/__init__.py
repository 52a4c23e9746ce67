"""Data layer: NIfTI I/O, orientation, resampling, dataset layouts, validation, splits, cache.

Public API (stable names; import from the submodules, this package imports nothing heavy):

``medtransfer.data.io``
    :class:`Volume`, :func:`load_nifti`, :func:`save_nifti`, :func:`is_nifti`, :func:`strip_nifti_suffix`.
``medtransfer.data.orientation``
    :func:`to_canonical` / :func:`from_canonical` (exact RAS+ reorientation and its inverse), :class:`Reorientation`.
``medtransfer.data.resample``
    :func:`resample_to_spacing`, :func:`resample_to_grid` (onto a reference shape + affine), :func:`resampled_grid`.
``medtransfer.data.preprocess``
    :class:`PreprocessConfig`, :class:`PreprocessInfo` (``to_dict``/``from_dict``), :func:`preprocess_image`,
    :func:`preprocess_case`, :func:`apply_to_label`, :func:`restore_to_input`, :func:`split_channels`.
``medtransfer.data.layouts``
    :class:`Case`, :class:`CaseDataset`, :class:`Problem`, :class:`Layout`, :func:`load_dataset` (auto-detects
    nnU-Net raw, MSD datalist, CC359, images/ + labels/), :func:`write_dataset_json`, :func:`attach_metadata`.
``medtransfer.data.check``
    :func:`check_dataset` -> every :class:`Problem` (what ``medtransfer data check`` prints).
``medtransfer.data.splits``
    :class:`Split`, :func:`split_by_subject`, :func:`kfold_by_subject`, :class:`LabelBudget`,
    :func:`n_scans_budget`, :func:`every_kth_slice_budget`, :func:`all_labels_budget`, ``DART_SLICE_STEPS``.
``medtransfer.data.cache``
    :class:`PreprocessCache`, :func:`build_cache`, :class:`CachedCase` (``.npy`` arrays read with mmap).

The torch datasets that training samples from live with the fine-tuning stage (:mod:`medtransfer.finetune.data`).
"""
