"""Task families and datasets for few-shot learning (introduced in 01_few_shot_problem)."""
from .base import ClassDataset
from .clinc import IntentDataset, load_clinc
from .folder import load_image_folder
from .omniglot import load_omniglot
from .sources import (ChecksumError, CorruptFileError, CourseDataError, DataNotFoundError, DownloadError,
                      UnsafeArchiveError)

__all__ = ["ClassDataset", "IntentDataset", "load_clinc", "load_image_folder", "load_omniglot", "ChecksumError",
           "CorruptFileError", "CourseDataError", "DataNotFoundError", "DownloadError", "UnsafeArchiveError"]
