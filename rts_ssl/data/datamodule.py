"""Lightning DataModule over a prepared dataset: prepares on first use, splits by group."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler

from rts_ssl.data.dataset import TileDataset, collate_tiles
from rts_ssl.data.normalization import BandStats, compute_band_stats
from rts_ssl.data.prepare import prepare_dataset
from rts_ssl.data.splits import assign_splits, label_subset
from rts_ssl.data.tiles import TileStore
from rts_ssl.errors import InputError

log = logging.getLogger(__name__)


class TileDataModule(pl.LightningDataModule):
    """Train/val/test tiles of one data config (``conf/data/*.yaml``).

    Train draws random crops of ``crop_size``; val and test cover every tile with a grid of
    crops of ``eval_crop_size`` (None: whole tiles, for networks that take any size: a
    slump cut by a crop border would count as two objects).
    ``split`` holds :func:`~rts_ssl.data.splits.assign_splits` arguments (test regions,
    fractions, grouping column, seed). ``labels`` (fine-tuning) keeps labelled tiles only and
    draws the train labels with :func:`~rts_ssl.data.splits.label_subset` (``fraction`` or
    ``count``, ``seed``); validation and test are never subsampled. ``balance`` samples
    train tiles so that about that share contains slumps; ``slump_crops`` places that share
    of the training crops on a slump of their tile. ``unlabelled`` (a data config, for
    semi-supervised fine-tuning) adds random crops of all its tiles, normalised as the
    labelled data, ``unlabelled_ratio`` of them per labelled crop: training batches are then
    ``{"labelled": ..., "unlabelled": ...}``.
    """

    def __init__(
        self,
        data: Mapping,
        batch_size: int = 64,
        num_workers: int = 0,
        crop_size: int | None = None,
        bands: Sequence[str] | None = None,
        split: Mapping | None = None,
        prepare_workers: int = 2,
        samples_per_epoch: int | None = None,
        temporal_positives: bool = False,
        labels: Mapping | None = None,
        balance: float | None = None,
        eval_crop_size: int | None = None,
        slump_crops: float = 0.0,
        unlabelled: Mapping | None = None,
        unlabelled_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        self.data = dict(data)
        self.root = Path(self.data["prepared"])
        self.batch_size, self.num_workers = batch_size, num_workers
        self.crop_size = crop_size
        self.eval_crop_size = eval_crop_size
        self.slump_crops = slump_crops
        self.bands = list(bands or self.data["bands"])
        self.split_args = dict(split or {})
        self.prepare_workers = prepare_workers
        self.samples_per_epoch = samples_per_epoch
        self.temporal_positives = temporal_positives
        self.labels = dict(labels) if labels else None
        self.balance = balance
        self.unlabelled = dict(unlabelled) if unlabelled else None
        self.unlabelled_ratio = unlabelled_ratio
        self.datasets: dict[str, TileDataset] = {}

    def prepare_data(self) -> None:
        """Prepare the datasets once (rank 0 only under DDP) if they are not there yet."""
        for data in filter(None, (self.data, self.unlabelled)):
            root = Path(data["prepared"])
            if not (root / "dataset.yaml").is_file():
                log.info("preparing %s into %s", data.get("name"), root)
                prepare_dataset(data, root, workers=self.prepare_workers)

    def setup(self, stage: str | None = None) -> None:
        """Every split at once, on the first call (fit, validate and test share them)."""
        if self.datasets:
            return
        store = self.store
        tiles = store.tiles
        if self.labels is not None:
            tiles = tiles[tiles["labelled_fraction"] > 0]
            if tiles.empty:
                raise InputError(self.root, "has no labelled tiles to fine-tune on")
        try:
            split = assign_splits(tiles, **self.split_args)
        except ValueError as err:
            raise InputError("split", str(err)) from None
        chosen = {name: split.index[split == name] for name in ("train", "val", "test")}
        if chosen["train"].empty:
            raise InputError(self.root, f"the train split is empty (split: {self.split_args})")
        if self.labels is not None:
            _check_evaluation_splits(chosen, self.split_args)
        stats = self._training_stats(chosen["train"])
        if self.labels is not None:
            try:
                chosen["train"] = label_subset(tiles.loc[chosen["train"]],
                                               self.labels.get("fraction"),
                                               self.labels.get("count"),
                                               self.labels.get("seed", 0))
            except ValueError as err:
                key = "label_count" if self.labels.get("count") else "label_fraction"
                raise InputError(key, str(err)) from None
        for name, indices in chosen.items():
            train = name == "train"
            size = self.crop_size if train else self.eval_crop_size
            self.datasets[name] = TileDataset(store, indices.to_numpy(), size, self.bands,
                                              self.temporal_positives and train, grid=not train,
                                              slump_crops=self.slump_crops if train else 0.0,
                                              stats=stats,
                                              count_once=not train and self.labels is not None)
        if self.unlabelled:
            self.datasets["unlabelled"] = self._unlabelled_tiles()
        if self.labels is not None:  # fine-tuning: the test follows training
            self._check_test_shares()

    def _check_test_shares(self) -> None:
        """Under DDP each process tests whole scenes (:class:`SceneShards`). A process with
        no scene would skip the test and leave the others waiting for its share of the
        metrics, so more processes than test scenes are refused here, before training."""
        processes = self.trainer.world_size if self.trainer is not None else 1
        layout = self.datasets["test"].layout
        scenes = len(layout.shapes) if layout is not None else 0  # scenes 0..n-1
        if 0 < scenes < processes:
            raise InputError("trainer.devices", f"{processes} processes but {scenes} test "
                             f"scenes (split.test_regions={self.split_args.get('test_regions')})"
                             ": each process tests whole scenes, so use at most "
                             f"trainer.devices={scenes}")

    def _training_stats(self, train: pd.Index) -> BandStats:
        """Normalisation statistics of the train split's images (all of them: a label budget
        withholds labels, not images); validation and the held-out test tiles never count,
        so the statistics exported with a model are those of the data it trained on."""
        return compute_band_stats(self.store, train.to_numpy())

    def _unlabelled_tiles(self) -> TileDataset:
        """Every tile of the unlabelled data, read as the model reads the labelled data."""
        store = TileStore(self.unlabelled["prepared"])
        if list(self.unlabelled["bands"]) != list(self.data["bands"]):
            raise InputError(store.root, f"unlabelled data {self.unlabelled['name']} has bands "
                             f"{', '.join(self.unlabelled['bands'])} but the labelled data has "
                             f"{', '.join(self.data['bands'])}")
        return TileDataset(store, None, self.crop_size, self.bands,
                           stats=self.datasets["train"].stats)

    @property
    def pixel_area_m2(self) -> float:
        """Ground area of one pixel (from the first tile's bounds)."""
        row = self.store.tiles.iloc[0]
        return float((row["maxx"] - row["minx"]) * (row["maxy"] - row["miny"])
                     / self.store.tile_size**2)

    @cached_property
    def store(self) -> TileStore:
        """The prepared labelled dataset (after :meth:`prepare_data`)."""
        return TileStore(self.root)

    def _loader(self, name: str, sampler=None, batch_size: int | None = None,
                drop_last: bool = False) -> DataLoader:
        return DataLoader(self.datasets[name], batch_size=batch_size or self.batch_size,
                          sampler=sampler, drop_last=drop_last,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=collate_tiles)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Random tiles (random crops when patches are smaller); ``samples_per_epoch`` long."""
        dataset = self.datasets["train"]
        count = self.samples_per_epoch or len(dataset)
        if self.balance is None:
            sampler = RandomSampler(dataset, count > len(dataset), num_samples=count)
        else:
            positive = self.store.tiles.loc[dataset.indices, "positive_fraction"].to_numpy() > 0
            share = positive.mean()
            if 0 < share < 1:
                weights = np.where(positive, self.balance / share,
                                   (1 - self.balance) / (1 - share))
            else:
                weights = np.ones(len(positive))
            sampler = WeightedRandomSampler(weights.tolist(), count, replacement=True)
        labelled = self._loader("train", sampler, drop_last=True)
        if "unlabelled" not in self.datasets:
            return labelled
        unlabelled = self.datasets["unlabelled"]
        batch = max(1, round(self.batch_size * self.unlabelled_ratio))
        draws = len(labelled) * batch  # as many batches as the labelled loader
        sampler = RandomSampler(unlabelled, draws > len(unlabelled), num_samples=draws)
        return {"labelled": labelled,
                "unlabelled": self._loader("unlabelled", sampler, batch, drop_last=True)}

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Under DDP each rank tests whole scenes (:class:`SceneShards`)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self._loader("test")
        scenes = self.datasets["test"].layout.scenes
        return self._loader("test", SceneShards(scenes, trainer.world_size, trainer.global_rank))


class SceneShards(DistributedSampler):
    """The test windows of every ``num_replicas``-th scene, from scene ``rank`` on: each scene
    on one rank, so its objects are counted whole, and no window twice (Lightning's
    DistributedSampler would pad the last rank with repeats, counted twice)."""

    def __init__(self, scenes: np.ndarray, num_replicas: int, rank: int) -> None:
        # not DistributedSampler.__init__: it would size equal shares, with padding
        self.num_replicas, self.rank, self.epoch, self.shuffle = num_replicas, rank, 0, False
        self.positions = np.flatnonzero(np.asarray(scenes) % num_replicas == rank).tolist()
        self.num_samples = self.total_size = len(self.positions)

    def __iter__(self):
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def _check_evaluation_splits(chosen: dict[str, pd.Index], split: dict) -> None:
    """Refuse a fine-tuning split without validation tiles (the decision threshold and the
    model are chosen on them); warn that one without test tiles gives no test metrics."""
    if chosen["val"].empty:
        raise InputError("split", "no validation tiles (the decision threshold is chosen on "
                         "them): raise split.val_fraction or use another split.group")
    if chosen["test"].empty:
        log.warning("no test tiles (split.test_regions=%s): the model is exported with its "
                    "validation metrics only", list(split.get("test_regions") or []))
