"""Infrastructure every stage uses: config models, image I/O and geometry, results layout, hashing,
logging, errors, devices, progress, shards (per-patient runs), prompt files, DICOM-SEG output."""
