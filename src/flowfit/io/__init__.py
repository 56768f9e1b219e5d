"""Reading data tables and reading and writing model files."""

from flowfit.io.model_file import load_flow, read_header, save_flow
from flowfit.io.tables import read_table

__all__ = ["load_flow", "read_header", "read_table", "save_flow"]
