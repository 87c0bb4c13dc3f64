"""Data: readers for images, volumes and DICOM, the three sources, preprocessing, RLE and writers."""

from medseg.data.preprocess import normalize, resize_image, resize_mask, to_original
from medseg.data.readers import read_dicom, read_image_2d, read_volume
from medseg.data.rle import read_rle_csv, rle_decode, rle_encode, write_rle_csv
from medseg.data.sources import LoadedData, Sample, infer_input, load_data
from medseg.data.writers import write_png_mask, write_png_prob, write_volume_like

__all__ = [
    "LoadedData",
    "Sample",
    "infer_input",
    "load_data",
    "normalize",
    "read_dicom",
    "read_image_2d",
    "read_rle_csv",
    "read_volume",
    "resize_image",
    "resize_mask",
    "rle_decode",
    "rle_encode",
    "to_original",
    "write_png_mask",
    "write_png_prob",
    "write_rle_csv",
    "write_volume_like",
]
