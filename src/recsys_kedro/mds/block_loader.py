"""Block-layout MDS folder -> ready training batches, with array operations only.

A block-layout folder (:mod:`recsys_kedro.mds.block_format`) stores one MDS sample per block of
rows. Mosaic's ``StreamingDataset`` does the block-level work: it shuffles blocks
(``shuffle_seed=seed``, a new order every epoch), partitions them over ranks (``RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` like torchrun), advances its epoch on every ``__iter__``,
downloads and caches shards. :class:`BlockBatchLoader` then shuffles the rows within each block,
concatenates the blocks and cuts batches of exactly ``batch_size`` rows with NumPy slicing,
``cumsum`` / ``repeat`` / ``arange`` gathers and ``torch.from_numpy`` - no per-row Python.

Exactly once per epoch, across ranks
    Mosaic pads every rank's partition to the same length by *repeating* samples (see
    ``streaming/base/partition/orig.py``), so with ``num_blocks % world_size != 0`` some blocks
    would be read twice per epoch. :class:`BlockStreamingDataset` replaces every repeated block
    id (all occurrences but the first in Mosaic's traversal order) by ``-1``, a position Mosaic
    skips. **Ranks may therefore get different numbers of blocks and rows in an epoch** (and,
    since blocks differ in size, different numbers of batches): a distributed training loop
    must cope, e.g. stop the epoch on every rank as soon as any rank runs out (an all-reduce of
    a "has a batch" flag per step). Rows of the blocks a rank does not reach before that stop
    are not trained on in that epoch; evaluation, which must see every row once, should let
    every rank finish its own batches.

Resumption
    :meth:`BlockBatchLoader.state_dict` records the epoch, the number of *positions* of this
    rank's partition consumed (a position is a block or a skipped ``-1``; counted from the start
    of the epoch) and the number of rows already taken from the partially consumed block.
    :meth:`BlockBatchLoader.load_state_dict` on a new loader (same folder, ``batch_size``,
    ``shuffle``, ``seed``, world size) restores Mosaic to the start of that epoch (Mosaic's
    ``load_state_dict`` with ``sample_in_epoch=0``: same block order and partition) and masks
    the consumed positions of this rank's partition with ``-1`` (never downloaded, never read);
    the partially consumed block is read again, permuted the same way, and its first rows are
    skipped. The concatenation of the batches before and after is exactly one uninterrupted
    epoch's, row for row. This is exact on every rank **provided every rank loads its own
    state** (gather them, e.g. ``torch.distributed.all_gather_object(loader.state_dict())``,
    and call ``load_state_dict(states[rank])``). Loading rank 0's state on every rank (what
    Mosaic's own ``StreamingDataLoader.state_dict`` does, with a global count ``per-rank count x
    world size``) is only approximate here, because ranks consume different numbers of
    positions for the same number of rows; it logs a warning. A different world size raises.

    Why not Mosaic's ``sample_in_epoch``: it drops a prefix of the *global* sample order and
    re-partitions the rest, which is exact only if all ranks consumed the same number of
    positions; and the repeat removal above would then be computed on the re-partitioned
    remainder, where a block whose first occurrence was already consumed is no longer a repeat.

Memory
    At most the blocks needed for the next batch (``ceil(batch_size / smallest block) + 1``)
    are held, decoded, at a time; batches that fall inside one block are views of it. Peak
    memory does not depend on the size of the dataset.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from time import sleep
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from streaming import StreamingDataset
from streaming.base.constant import TICK

from recsys_kedro.mds.block_format import (
    BLOCK_ID,
    BLOCK_ROWS,
    LENGTHS_SUFFIX,
    VALUES_SUFFIX,
    lengths_column,
    values_column,
)
from recsys_kedro.mds.reader import make_streaming_dataset
from recsys_kedro.mds.writer import MDSFolder

logger = logging.getLogger(__name__)

STATE_VERSION = 1

#: Blocks Mosaic prepares ahead of the one being read. Mosaic's default (8 x batch size in
#: samples, i.e. 8 blocks) throttles its "ready" thread, which then sleeps 7 ms at a time and
#: stalls a loader that consumes 8 blocks faster than that.
DEFAULT_PREDOWNLOAD = 64

# Mosaic's traversal order of the 5-D work array (nodes, ranks per node, workers per rank,
# batches per worker, batch size): batch by batch, worker by worker, then node, rank, sample
# (the order `streaming/base/partition/relaxed.py` flattens a partition in).
_TRAVERSAL_ORDER = (3, 2, 0, 1, 4)


def drop_repeated_samples(sample_ids: NDArray[np.int64]) -> int:
    """Replace, in place, every repeated sample id of an epoch's work array by ``-1``.

    ``sample_ids`` is Mosaic's 5-D array (nodes, ranks per node, workers per rank, batches per
    worker, batch size); the first occurrence of an id in Mosaic's traversal order is kept.

    Returns:
        The number of positions set to ``-1``.
    """
    if sample_ids.size == 0:
        return 0
    if not sample_ids.flags.writeable:
        raise ValueError("the epoch's sample-id array is read-only; cannot drop repeats in place")
    ordered = sample_ids.transpose(_TRAVERSAL_ORDER)  # a view
    flat = ordered.reshape(-1)  # a copy (the view is not contiguous)
    valid = np.flatnonzero(flat != -1)
    _, first = np.unique(flat[valid], return_index=True)
    if len(first) == len(valid):
        return 0
    repeated = np.ones(len(valid), dtype=bool)
    repeated[first] = False
    flat[valid[repeated]] = -1
    ordered[...] = flat.reshape(ordered.shape)  # written through the view into sample_ids
    return int(repeated.sum())


class BlockStreamingDataset(StreamingDataset):
    """StreamingDataset over a block-layout folder that never yields a block twice in an epoch.

    Mosaic pads partitions by repeating samples; :meth:`_share_work` turns every repeat into
    ``-1`` (skipped) before the epoch's work is published to the node's ranks, so blocks are
    read exactly once per epoch across all ranks (ranks may then get different numbers of
    blocks). Repeats are dropped whatever their cause: do not combine with up-sampling
    (``epoch_size`` larger than the dataset, stream ``repeat`` / ``proportion``).

    Extras used by :class:`BlockBatchLoader` (one process per rank, no DataLoader workers):

    * ``yield_skipped=True``: every ``-1`` position of the partition comes out of ``__iter__``
      as ``None`` instead of being skipped silently, so positions can be counted.
    * ``skip_positions``: the first ``skip_positions`` positions of this rank's partition of the
      next epoch started are masked with ``-1`` (used to resume mid-epoch; reset to 0 once used).
    * ``epoch_in_progress`` / ``epoch_positions`` / ``epoch_last_block_end``: the epoch being
      iterated, the length of this rank's partition and the position after its last block.

    Resuming through Mosaic's own ``sample_in_epoch > 0`` is not exact with several ranks (the
    repeats are then computed on the re-partitioned remainder of the epoch); use
    :class:`BlockBatchLoader`'s state instead.
    """

    def __init__(self, *, yield_skipped: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.yield_skipped = yield_skipped
        self.skip_positions = 0
        self.epoch_in_progress: int | None = None
        self.epoch_positions = 0
        self.epoch_last_block_end = 0

    def _share_work(self, sample_ids: NDArray[np.int64]):
        # Only the local leader calls this, with the whole epoch (every node, rank, worker).
        # It must edit the array in place: the leader itself goes on with this very array, the
        # other ranks of the node with the copy published to shared memory.
        dropped = drop_repeated_samples(sample_ids)
        if dropped:
            logger.debug("Dropped %d repeated block(s) from the epoch's partition", dropped)
        return super()._share_work(sample_ids)

    def _get_work(self, epoch: int, sample_in_epoch: int) -> NDArray[np.int64]:
        sample_ids = super()._get_work(epoch, sample_in_epoch)
        skip, self.skip_positions = self.skip_positions, 0
        if skip:
            sample_ids = np.array(sample_ids)  # never write into shared memory
            sample_ids[:skip] = -1
        self.epoch_in_progress = epoch
        self.epoch_positions = len(sample_ids)
        blocks = np.flatnonzero(sample_ids != -1)
        self.epoch_last_block_end = int(blocks[-1]) + 1 if len(blocks) else 0
        return sample_ids

    def _each_sample_id(self, it) -> Iterator[Any]:
        if not self.yield_skipped:
            yield from super()._each_sample_id(it)
            return
        # Mosaic 0.13's yield loop, except that a -1 position is yielded as None.
        while True:
            if it.should_exit():
                break
            if it.yield_index == it.total:
                break
            if hasattr(self, "_event") and self._event.is_set():
                break
            if it.ready_index <= it.yield_index:
                sleep(TICK)
                continue
            sample_id = it.sample_ids[it.yield_index]
            yield None if sample_id == -1 else sample_id
            it.yield_index += 1
        it.on_exit()

    def __getitem__(self, at: Any) -> Any:
        if at is None:  # a skipped position (yield_skipped=True)
            return None
        return super().__getitem__(at)


def block_data_columns(folder: MDSFolder) -> tuple[list[str], list[str]]:
    """(scalar columns, jagged columns) of a block-layout folder, in the folder's order."""
    names = list(folder.columns)
    jagged = [n[: -len(VALUES_SUFFIX)] for n in names if n.endswith(VALUES_SUFFIX)]
    jagged += [n for n in folder.jagged if n not in jagged]
    for name in jagged:
        if values_column(name) not in folder.columns or lengths_column(name) not in folder.columns:
            raise ValueError(
                f"jagged column {name!r} needs both {values_column(name)!r} and "
                f"{lengths_column(name)!r} in the folder's columns {names}"
            )
    scalar = [
        n
        for n in names
        if not n.startswith("_") and not n.endswith((VALUES_SUFFIX, LENGTHS_SUFFIX))
    ]
    return scalar, jagged


class _Block:
    """One decoded block, rows already permuted; ``start`` rows of it have been batched."""

    __slots__ = ("n", "start", "position", "scalars", "values", "lengths", "offsets")

    def __init__(self, n: int, position: int) -> None:
        self.n = n
        self.start = 0
        self.position = position
        self.scalars: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        self.lengths: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray] = {}  # n + 1 row offsets into values


def _writable(array: np.ndarray) -> np.ndarray:
    # Mosaic decodes with np.frombuffer over a bytes object: read-only memory, which
    # torch.from_numpy warns about (and which must not be written through a tensor).
    return array if array.flags.writeable else array.copy()


class BlockBatchLoader:
    """Batches of exactly ``batch_size`` rows from a block-layout MDS folder, for this rank.

    ``for batch in loader`` runs one epoch on this rank (the next epoch on every call, as
    Mosaic counts them) and yields ``dict[str, torch.Tensor]``: a scalar column ``c`` as
    ``(B,)``; a jagged column ``j`` as ``j__values`` (the values of the B rows, concatenated)
    and ``j__lengths`` ``(B,)`` int32. ``B == batch_size`` except for the rank's last batch of
    the epoch, which is dropped (``drop_last``) or yielded smaller. See the module docstring for
    the exactly-once guarantee (ranks may get different numbers of batches), resumption and
    memory.

    Args:
        folder: A block-layout :class:`MDSFolder`.
        batch_size: Rows per batch.
        shuffle: Shuffle blocks (Mosaic, per epoch) and rows within each block (a permutation
            from ``np.random.default_rng([seed, epoch, block_id])``); ``False`` keeps the
            written order on one rank.
        seed: Seed of both shuffles (Mosaic's ``shuffle_seed``); non-negative.
        drop_last: Drop the rank's last batch of an epoch if it is smaller than ``batch_size``.
        local_cache_dir: Mosaic's local directory (see
            :func:`recsys_kedro.mds.make_streaming_dataset`); every loader alive at the same time
            in one process (or node) over the same data needs its own.
        columns: Data columns to load (scalar or jagged names); ``None`` loads them all.
        **streaming_kwargs: Passed to ``StreamingDataset`` (``num_canonical_nodes``,
            ``shuffle_algo``, ``shuffle_block_size``, ``predownload``, ``cache_limit``, ...).
            Keep ``num_canonical_nodes`` fixed to get the same block order on another number of
            nodes. Mosaic's ``batch_size`` is set to 1 block: with one process per rank it only
            rounds the partition up to a multiple of ``workers x batch_size`` with ``-1``
            padding, and sets the predownload default; rows are batched here.
    """

    def __init__(
        self,
        folder: MDSFolder,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        local_cache_dir: str | None = None,
        columns: Sequence[str] | None = None,
        **streaming_kwargs: Any,
    ) -> None:
        if folder.layout != "block":
            raise ValueError(f"BlockBatchLoader needs a block-layout folder, got {folder.layout!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        for key in ("batch_size", "shuffle", "shuffle_seed", "yield_skipped", "dataset_cls"):
            if key in streaming_kwargs:
                raise TypeError(f"BlockBatchLoader sets {key!r} itself")
        scalar, jagged = block_data_columns(folder)
        if columns is None:
            columns = scalar + jagged
        columns = list(columns)
        unknown = [c for c in columns if c not in scalar and c not in jagged]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; the folder has {scalar + jagged}")
        if len(set(columns)) != len(columns):
            raise ValueError(f"columns listed twice: {columns}")
        if not columns:
            raise ValueError("columns is empty")

        self.folder = folder
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.columns = columns
        self.scalar_columns = [c for c in columns if c in scalar]
        self.jagged_columns = [c for c in columns if c in jagged]

        streaming_kwargs.setdefault("predownload", DEFAULT_PREDOWNLOAD)
        self.dataset: BlockStreamingDataset = make_streaming_dataset(
            folder,
            batch_size=1,
            shuffle=self.shuffle,
            seed=self.seed,
            local_cache_dir=local_cache_dir,
            dataset_cls=BlockStreamingDataset,
            yield_skipped=True,
            **streaming_kwargs,
        )
        world = self.dataset._unique_rank_world
        self.rank = world.rank
        self.world_size = world.num_ranks
        # Where this rank stands: (epoch, positions consumed, rows taken from the next block).
        # None: at the start of the epoch Mosaic will iterate next.
        self._cursor: tuple[int, int, int] | None = None
        self._resume: tuple[int, int] | None = None  # (positions, row offset) for next __iter__
        self._token: object | None = None

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        token = object()
        self._token = token
        # At the start of the epoch Mosaic iterates next (or at the loaded state), until the
        # first batch.
        self._cursor = None
        return self._epoch(token)

    def _epoch(self, token: object) -> Iterator[dict[str, torch.Tensor]]:
        skip_positions, row_offset = self._resume or (0, 0)
        self._resume = None
        self.dataset.skip_positions = skip_positions
        batch_size = self.batch_size
        pending: deque[_Block] = deque()
        pending_rows = 0
        pulled = 0  # positions of this rank's partition pulled from Mosaic
        epoch = -1

        for item in self.dataset:
            position = pulled
            pulled += 1
            if position == 0:
                epoch = int(self.dataset.epoch_in_progress)
            if item is None:  # a skipped position: a repeat, padding, or consumed before resuming
                if position == skip_positions and row_offset:
                    raise RuntimeError(
                        "cannot resume: the partially consumed block of the saved state is not "
                        "in this rank's partition (different data, world size or settings?)"
                    )
                continue
            block = self._decode(item, epoch, position)
            if position == skip_positions and row_offset:
                if row_offset >= block.n:
                    raise RuntimeError(
                        f"cannot resume: row offset {row_offset} is beyond block "
                        f"{int(item[BLOCK_ID])} of {block.n} rows"
                    )
                block.start = row_offset
            pending.append(block)
            pending_rows += block.n - block.start
            while pending_rows >= batch_size:
                batch = self._take(pending, batch_size)
                pending_rows -= batch_size
                if self._token is token:
                    self._cursor = self._cursor_after(epoch, pending, pending_rows, pulled)
                yield batch

        if pulled == 0:  # an empty partition: Mosaic yielded nothing at all
            epoch = int(self.dataset.epoch_in_progress)
        if pending_rows and not self.drop_last:
            batch = self._take(pending, pending_rows)
            if self._token is token:
                self._cursor = (epoch + 1, 0, 0)
            yield batch
        if self._token is token:
            self._cursor = (epoch + 1, 0, 0)

    def _cursor_after(
        self, epoch: int, pending: deque[_Block], pending_rows: int, pulled: int
    ) -> tuple[int, int, int]:
        """The resume point after a batch: (epoch, positions consumed, rows of the next block)."""
        if pulled >= self.dataset.epoch_last_block_end and (
            not pending_rows or (self.drop_last and pending_rows < self.batch_size)
        ):
            return (epoch + 1, 0, 0)  # no row of this epoch left to batch on this rank
        if pending:
            front = pending[0]
            return (epoch, front.position, front.start)
        return (epoch, pulled, 0)

    def _decode(self, sample: dict[str, Any], epoch: int, position: int) -> _Block:
        n = int(sample[BLOCK_ROWS])
        block_id = int(sample[BLOCK_ID])
        block = _Block(n, position)
        perm = None
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, block_id]).permutation(n)
        for name in self.scalar_columns:
            column = sample[name]
            if len(column) != n:
                raise ValueError(
                    f"block {block_id}: column {name!r} has {len(column)} rows, _n_rows is {n}"
                )
            block.scalars[name] = column[perm] if perm is not None else _writable(column)
        for name in self.jagged_columns:
            values = sample[values_column(name)]
            lengths = sample[lengths_column(name)]
            if len(lengths) != n:
                raise ValueError(
                    f"block {block_id}: {lengths_column(name)!r} has {len(lengths)} rows, "
                    f"_n_rows is {n}"
                )
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            if offsets[-1] != len(values):
                raise ValueError(
                    f"block {block_id}: {values_column(name)!r} has {len(values)} values, "
                    f"its lengths sum to {int(offsets[-1])}"
                )
            if perm is not None:
                new_lengths = lengths[perm]
                new_offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum(new_lengths, out=new_offsets[1:])
                # Value k of the permuted block comes from old_start(row) + (k - new_start(row)).
                shift = np.repeat(offsets[:-1][perm] - new_offsets[:-1], new_lengths)
                values = values[np.arange(len(values), dtype=np.int64) + shift]
                lengths, offsets = new_lengths, new_offsets
            else:
                values, lengths = _writable(values), _writable(lengths)
            block.values[name] = values
            block.lengths[name] = lengths
            block.offsets[name] = offsets
        return block

    def _take(self, pending: deque[_Block], rows: int) -> dict[str, torch.Tensor]:
        """Cut the next ``rows`` rows off the pending blocks into a batch of tensors."""
        pieces: list[tuple[_Block, int, int]] = []
        need = rows
        while need:
            block = pending[0]
            stop = min(block.n, block.start + need)
            pieces.append((block, block.start, stop))
            need -= stop - block.start
            block.start = stop
            if stop == block.n:
                pending.popleft()

        def join(parts: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))

        batch: dict[str, torch.Tensor] = {}
        for name in self.columns:
            if name in self.scalar_columns:
                batch[name] = join([b.scalars[name][lo:hi] for b, lo, hi in pieces])
            else:
                batch[values_column(name)] = join(
                    [
                        b.values[name][b.offsets[name][lo] : b.offsets[name][hi]]
                        for b, lo, hi in pieces
                    ]
                )
                batch[lengths_column(name)] = join([b.lengths[name][lo:hi] for b, lo, hi in pieces])
        return batch

    # ------------------------------------------------------------------ state

    def _num_canonical_nodes(self) -> int:
        dataset = self.dataset
        if dataset.num_canonical_nodes:
            return int(dataset.num_canonical_nodes)
        # Mosaic's default, as set in StreamingDataset._resume on the first epoch.
        nodes = dataset._parallel_rank_world.num_nodes
        return 64 * nodes if dataset.shuffle_algo in ("py1s", "py2s") else nodes

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands in the epoch, to resume with :meth:`load_state_dict`.

        Call it between batches. Every rank has its own state (see the module docstring).
        """
        if self._cursor is None:
            epoch, positions, row_offset = self.dataset.next_epoch, 0, 0
            if self._resume is not None:  # loaded, not iterated yet
                positions, row_offset = self._resume
        else:
            epoch, positions, row_offset = self._cursor
        dataset = self.dataset
        initial_nodes = dataset.initial_physical_nodes
        if initial_nodes is None:
            initial_nodes = dataset._parallel_rank_world.num_nodes
        return {
            "version": STATE_VERSION,
            "epoch": int(epoch),
            "positions": int(positions),
            "row_offset": int(row_offset),
            "rank": int(self.rank),
            "world_size": int(self.world_size),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            # Mosaic's own resumption state, at the start of the epoch (positions are masked
            # per rank by this loader, not dropped globally by Mosaic).
            "mosaic": {
                "epoch": int(epoch),
                "sample_in_epoch": 0,
                "num_canonical_nodes": self._num_canonical_nodes(),
                "shuffle_seed": int(dataset.shuffle_seed),
                "initial_physical_nodes": int(initial_nodes),
            },
        }

    def end_epoch(self) -> None:
        """Give up the rest of the epoch being iterated: :meth:`state_dict` (and the next
        ``__iter__``) then stand at the start of the next epoch.

        A lock-step training loop ends an epoch on every rank when the first rank runs out, so
        the other ranks' iterators stop before their last rows; without this their state would
        still point into the old epoch.
        """
        self._cursor = None
        self._token = None
        self._resume = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (this rank's :meth:`state_dict`) on the next ``__iter__``."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown BlockBatchLoader state version {state.get('version')!r}")
        for key in ("world_size", "batch_size", "shuffle", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume: the state was saved with {key}={state[key]!r}, "
                    f"this loader has {key}={getattr(self, key)!r}"
                )
        if state["rank"] != self.rank:
            logger.warning(
                "Loading rank %d's loader state on rank %d: resumption is approximate on this "
                "rank (rows near the saved position may be skipped or repeated); load each "
                "rank's own state for exact resumption.",
                state["rank"],
                self.rank,
            )
        self.dataset.load_state_dict(dict(state["mosaic"]))
        # Mosaic ignores a resume state older than its next epoch: rewind it (all ranks set the
        # same value).
        self.dataset.next_epoch = int(state["epoch"])
        self._resume = (int(state["positions"]), int(state["row_offset"]))
        self._cursor = None
        self._token = None
