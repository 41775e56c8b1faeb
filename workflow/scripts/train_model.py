from pathlib import Path

from lesionlocator.core.config import TrainConfig
from lesionlocator.core.logs import log_to_file
from lesionlocator.train.run import train_model

log_to_file(snakemake.log[0])
dataset = Path(snakemake.input.dataset)
if not (dataset / "dataset.json").exists():  # the export folder: its single DatasetNNN_Name inside
    (dataset,) = sorted(p for p in dataset.iterdir() if p.name.startswith("Dataset"))
train_model(TrainConfig.model_validate(snakemake.params.train), dataset, snakemake.params.run_dir)
