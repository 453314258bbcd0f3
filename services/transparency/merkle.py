"""Where the transparency log's Merkle tree keeps its hashes, and how it reads trees and proofs.

Pure arithmetic, no storage: a port of the "stored hashes" scheme of Go's
golang.org/x/mod/sumdb/tlog (tlog.go: StoredHashIndex, SplitStoredHashIndex, StoredHashCount,
StoredHashes, TreeHash, ProveRecord, ProveTree), itself section 3.3 of Crosby and Wallach,
"Efficient Data Structures for Tamper-Evident Logging" (USENIX Security 2009).

Every complete, aligned subtree of the log (the leaves [n * 2^level, (n + 1) * 2^level)) has its
hash kept once, at the integer `stored_hash_index(level, n)`. The indexes are dense and only grow:
appending leaf n writes its leaf hash and then the hash of every subtree it completes, right after
the hashes of leaf n - 1, so the store is append-only. Any tree hash, inclusion proof or
consistency proof at any size then reads at most O(log n) stored hashes, in one `HashReader` call
(one query), with the indexes in increasing order.

The hashes are RFC 6962's (`tlog_check.leaf_hash`, `tlog_check.node_hash`) and the proofs are RFC
9162's, checked by `tlog_check.verify_inclusion` and `tlog_check.verify_consistency` (and by Go's
tlog.CheckRecord and tlog.CheckTree). A reader that returns the wrong number of hashes, or a hash
that is not 32 bytes, gets a `ValueError`; so do impossible sizes and indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .tlog_check import EMPTY_ROOT, HASH_SIZE, node_hash

HashReader = Callable[[Sequence[int]], Sequence[bytes]]
"""The stored hashes at these indexes, in that order (one store query)."""


def _maxpow2(n: int) -> tuple[int, int]:
    """(k, l): k = 2**l, the largest power of two smaller than n (1 for n <= 2). Go's maxpow2."""
    level = max((n - 1).bit_length() - 1, 0)
    return 1 << level, level


def _trailing_ones(n: int) -> int:
    return ((n ^ (n + 1)).bit_length()) - 1


def stored_hash_index(level: int, n: int) -> int:
    """The index of the hash of the n-th complete subtree of 2**level leaves."""
    if level < 0 or n < 0:
        raise ValueError(f"no stored hash at level {level}, position {n}")
    # Level L's n-th hash is written right after level L+1's (2n+1)-th hash: go down to level 0.
    n = ((n + 1) << level) - 1
    # Level 0's n-th hash is written at n + n/2 + n/4 + ...
    index = 0
    while n > 0:
        index += n
        n >>= 1
    return index + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The (level, n) stored at `index`: the inverse of `stored_hash_index`."""
    if index < 0:
        raise ValueError(f"no stored hash at index {index}")
    # stored_hash_index(0, n) < 2n, so the leaf written last before `index` is in
    # [index/2, index/2 + log2(index)].
    n = index // 2
    index_n = stored_hash_index(0, n)
    if index_n > index:
        raise AssertionError("bad math in split_stored_hash_index")
    while True:
        # Leaf n + 1 comes after leaf n's hash and the subtrees leaf n completes.
        x = index_n + 1 + _trailing_ones(n)
        if x > index:
            break
        n += 1
        index_n = x
    # The hash was written with leaf n: it is one of (0, n), (1, n/2), (2, n/4), ...
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of n leaves stores (the index the next leaf's hash goes to)."""
    if n < 0:
        raise ValueError(f"no tree of size {n}")
    if n == 0:
        return 0
    return stored_hash_index(0, n - 1) + 1 + _trailing_ones(n - 1)


def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the indexes of the maximal complete subtrees making up the leaves [lo, hi)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise AssertionError("bad math in _sub_tree_index")
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The hash of the leaves [lo, hi) from the hashes read at `_sub_tree_index(lo, hi)`."""
    count = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        count += 1
        lo += k
    if len(hashes) < count:
        raise AssertionError("bad index math in _sub_tree_hash")
    h = hashes[count - 1]
    for i in range(count - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h, hashes[count:]


def frontier_indexes(n: int) -> list[int]:
    """The indexes of the maximal complete subtrees of a tree of n leaves, left to right.

    Their hashes (the "frontier") are all that appending to the tree needs (`append_leaves`).
    """
    if n < 0:
        raise ValueError(f"no tree of size {n}")
    return _sub_tree_index(0, n, [])


def _check_read(indexes: Sequence[int], hashes: Sequence[bytes]) -> list[bytes]:
    if len(hashes) != len(indexes):
        raise ValueError(f"asked the store for {len(indexes)} hashes, it gave {len(hashes)}")
    for index, h in zip(indexes, hashes, strict=True):
        if len(h) != HASH_SIZE:
            raise ValueError(f"the stored hash at index {index} is {len(h)} bytes, not 32")
    return [bytes(h) for h in hashes]


def _read(read: HashReader, indexes: list[int]) -> list[bytes]:
    return _check_read(indexes, read(indexes)) if indexes else []


def append_leaves(
    n: int, frontier: Sequence[bytes], leaves: Sequence[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """Append leaves (their LEAF HASHES) to the tree of n leaves whose frontier is `frontier`.

    `frontier` holds the hashes at `frontier_indexes(n)`. Returns the stored hashes to write, at
    the indexes `stored_hash_count(n)`, `stored_hash_count(n) + 1`, ... in that order, and the new
    frontier (the hashes at `frontier_indexes(n + len(leaves))`). Nothing is read: a batch of
    appends needs only the one read of the frontier.
    """
    if n < 0:
        raise ValueError(f"no tree of size {n}")
    if len(frontier) != n.bit_count():
        raise ValueError(
            f"a tree of {n} leaves has a frontier of {n.bit_count()} hashes, not {len(frontier)}"
        )
    stack = _check_read(frontier_indexes(n), frontier)
    written: list[bytes] = []
    for position, leaf in enumerate(leaves):
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash {position} is {len(leaf)} bytes, not {HASH_SIZE}")
        h = bytes(leaf)
        written.append(h)
        # Each trailing one bit of n completes a subtree with the subtree to its left.
        for _ in range(_trailing_ones(n)):
            h = node_hash(stack.pop(), h)
            written.append(h)
        stack.append(h)
        n += 1
    return written, stack


def tree_hash(n: int, read: HashReader) -> bytes:
    """The root hash of the tree of the first n leaves (one read of at most 1 + log2 n hashes)."""
    if n < 0:
        raise ValueError(f"no tree of size {n}")
    if n == 0:
        return EMPTY_ROOT
    indexes = _sub_tree_index(0, n, [])
    h, rest = _sub_tree_hash(0, n, _read(read, indexes))
    if rest:
        raise AssertionError("bad index math in tree_hash")
    return h


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo <= n < hi:
        raise AssertionError("bad math in _leaf_proof_index")
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, n, need)
    return need


def _leaf_proof(lo: int, hi: int, n: int, hashes: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    if not lo <= n < hi:
        raise AssertionError("bad math in _leaf_proof")
    if lo + 1 == hi:
        # The leaf itself: its hash is what the verifier starts from, not part of the proof.
        return [], hashes
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        proof, hashes = _leaf_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        proof, hashes = _leaf_proof(lo + k, hi, n, hashes)
    proof.append(th)
    return proof, hashes


def prove_inclusion(tree_size: int, leaf_index: int, read: HashReader) -> list[bytes]:
    """The RFC 9162 inclusion proof (audit path) of leaf `leaf_index` in the tree of `tree_size`.

    The same hashes as Go's tlog.ProveRecord, leaf side first; one read.
    """
    if tree_size < 0 or leaf_index < 0 or leaf_index >= tree_size:
        raise ValueError(f"no leaf {leaf_index} in a tree of size {tree_size}")
    indexes = _leaf_proof_index(0, tree_size, leaf_index, [])
    proof, rest = _leaf_proof(0, tree_size, leaf_index, _read(read, indexes))
    if rest:
        raise AssertionError("bad index math in prove_inclusion")
    return proof


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo < n <= hi:
        raise AssertionError("bad math in _tree_proof_index")
    if n == hi:
        return need if lo == 0 else _sub_tree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        _sub_tree_index(lo + k, hi, need)
    else:
        _sub_tree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, n, need)
    return need


def _tree_proof(lo: int, hi: int, n: int, hashes: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    if not lo < n <= hi:
        raise AssertionError("bad math in _tree_proof")
    if n == hi:
        if lo == 0:
            # Exactly the old tree: the verifier knows its hash.
            return [], hashes
        th, hashes = _sub_tree_hash(lo, hi, hashes)
        return [th], hashes
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof, hashes = _tree_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        proof, hashes = _tree_proof(lo + k, hi, n, hashes)
    proof.append(th)
    return proof, hashes


def prove_consistency(new_size: int, old_size: int, read: HashReader) -> list[bytes]:
    """The RFC 9162 consistency proof that the tree of `old_size` is a prefix of `new_size`'s.

    The same hashes as Go's tlog.ProveTree; one read. Empty when the sizes are equal or the old
    tree is empty (which `tlog_check.verify_consistency` accepts).
    """
    if old_size < 0 or new_size < old_size:
        raise ValueError(f"no consistency proof from tree size {old_size} to {new_size}")
    if old_size == 0:
        return []
    indexes = _tree_proof_index(0, new_size, old_size, [])
    proof, rest = _tree_proof(0, new_size, old_size, _read(read, indexes))
    if rest:
        raise AssertionError("bad index math in prove_consistency")
    return proof
