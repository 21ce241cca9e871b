"""Lightning DataModule over a prepared dataset: prepares on first use, splits by group."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader, RandomSampler

from rts_ssl.data.dataset import TileDataset, collate_tiles
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.splits import assign_splits
from rts_ssl.data.tiles import TileStore

log = logging.getLogger(__name__)


class TileDataModule(pl.LightningDataModule):
    """Train/val/test tiles of one data config (``conf/data/*.yaml``).

    ``split`` holds :func:`~rts_ssl.data.splits.assign_splits` arguments (test regions,
    fractions, grouping column, seed).
    """

    def __init__(
        self,
        data: Mapping,
        batch_size: int = 64,
        num_workers: int = 0,
        patch_size: int | None = None,
        bands: Sequence[str] | None = None,
        split: Mapping | None = None,
        prepare_workers: int = 2,
        samples_per_epoch: int | None = None,
        temporal_positives: bool = False,
    ) -> None:
        super().__init__()
        self.data = dict(data)
        self.root = Path(self.data["prepared"])
        self.batch_size, self.num_workers = batch_size, num_workers
        self.patch_size = patch_size
        self.bands = list(bands or self.data["bands"])
        self.split_args = dict(split or {})
        self.prepare_workers = prepare_workers
        self.samples_per_epoch = samples_per_epoch
        self.temporal_positives = temporal_positives
        self.datasets: dict[str, TileDataset] = {}

    def prepare_data(self) -> None:
        """Prepare the dataset once (rank 0 only under DDP) if it is not there yet."""
        if not (self.root / "dataset.yaml").is_file():
            log.info("preparing %s into %s", self.data.get("name"), self.root)
            prepare_dataset(self.data, self.root, workers=self.prepare_workers)

    def setup(self, stage: str | None = None) -> None:
        store = TileStore(self.root)
        split = assign_splits(store.tiles, **self.split_args)
        for name in ("train", "val", "test"):
            indices = split.index[split == name].to_numpy()
            self.datasets[name] = TileDataset(store, indices, self.patch_size, self.bands,
                                              self.temporal_positives and name == "train")

    @property
    def store(self) -> TileStore:
        return self.datasets["train"].store

    def _loader(self, name: str, sampler=None) -> DataLoader:
        return DataLoader(self.datasets[name], batch_size=self.batch_size, sampler=sampler,
                          drop_last=sampler is not None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=collate_tiles)

    def train_dataloader(self) -> DataLoader:
        """Random tiles (random crops when patches are smaller); ``samples_per_epoch`` long."""
        dataset = self.datasets["train"]
        if len(dataset) == 0:
            raise ValueError(f"{self.root}: the train split is empty")
        count = self.samples_per_epoch or len(dataset)
        replacement = count > len(dataset)
        return self._loader("train", RandomSampler(dataset, replacement, num_samples=count))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
