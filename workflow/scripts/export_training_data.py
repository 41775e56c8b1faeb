from lesionlocator.core.logs import log_to_file
from lesionlocator.train.data import export_dataset

log_to_file(snakemake.log[0])
export_dataset(snakemake.input.cohort, snakemake.output.raw, dataset_id=800, name="LesionLocatorSynth", layout="combined")
