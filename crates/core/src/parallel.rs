//! Batch work cut over the machine's cores (scoring a file, estimating every
//! cycle of a history). Results come back in input order and each piece is
//! computed exactly as on one core, so a batch gives the same numbers on an
//! edge box of one core as on a server of many.
//!
//! The calling thread works too; the rest runs on worker threads kept for
//! the life of the process (rayon's global pool, one thread fewer than the
//! cores). Starting a thread costs 0.15–0.3 ms in a virtual machine, as long
//! as scoring 30,000 rows of a small PCA model; a kept worker is only woken.

use std::ops::Range;

/// The machine's cores (asked once: the call costs a system call).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Start the worker threads now rather than on the first batch: a
/// long-running program (the `usan` binary) calls this at start-up so that
/// no batch waits for them. Calling it again, or after a batch, does nothing.
pub fn start() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let workers = cores().saturating_sub(1).max(1);
        // An error means the global pool exists already (someone else built it): use that one.
        let _ = rayon_core::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("usan-batch-{i}"))
            .build_global();
    });
}

/// `items` cut into at most one contiguous stretch per core. Every stretch
/// but the last holds at least `min_per_core` items (fewer items than two
/// such stretches make one stretch) and starts at a multiple of `align` from
/// `items.start`, so callers that work in blocks keep their blocks whole.
fn stretches(items: Range<usize>, min_per_core: usize, align: usize) -> Vec<Range<usize>> {
    let len = items.end.saturating_sub(items.start);
    let workers = cores().min(len / min_per_core.max(1)).max(1);
    if workers == 1 {
        return vec![items];
    }
    let stretch = len.div_ceil(workers).div_ceil(align.max(1)) * align.max(1);
    (items.start..items.end).step_by(stretch).map(|start| start..(start + stretch).min(items.end)).collect()
}

/// `work` over `items` (cut as `stretches` says), results in order; the
/// calling thread computes the first stretch.
pub fn over_cores<T: Send>(
    items: Range<usize>,
    min_per_core: usize,
    align: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    on_threads(stretches(items, min_per_core, align), work)
}

/// `work` writing `out` in place, in pieces of `piece` items (the last
/// may be shorter): each call gets a piece's indices and that part of `out`
/// (no per-piece buffers to allocate and join). The calling thread and the
/// pool's workers take the next piece until none is left, so a core that
/// starts late or stalls (a virtual machine's) does less of the work rather
/// than holding up the batch. The cut depends only on `piece`, not on the
/// cores: callers that work in blocks pass a multiple of their block.
pub fn fill_over_cores<T: Send>(out: &mut [T], piece: usize, work: impl Fn(Range<usize>, &mut [T]) + Sync) {
    let piece = piece.max(1);
    let helpers = cores().min(out.len().div_ceil(piece)).saturating_sub(1);
    let parts = out.chunks_mut(piece).enumerate().map(|(i, part)| (i * piece..i * piece + part.len(), part));
    if helpers == 0 {
        parts.for_each(|(range, part)| work(range, part));
        return;
    }
    let queue = std::sync::Mutex::new(parts);
    let take_pieces = || {
        loop {
            // Its own statement: the lock is held to take a piece, not while working on it.
            let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
            let Some((range, part)) = next else { break };
            work(range, part);
        }
    };
    start();
    rayon_core::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| take_pieces());
        }
        take_pieces();
    });
}

/// `work` on each piece: the first on the calling thread, the others on the
/// pool's workers; results in order, a worker's panic passed on.
fn on_threads<P: Send, T: Send>(pieces: Vec<P>, work: impl Fn(P) -> T + Sync) -> Vec<T> {
    let mut pieces = pieces.into_iter();
    let Some(first) = pieces.next() else {
        return Vec::new();
    };
    if pieces.len() == 0 {
        return vec![work(first)];
    }
    start();
    let mut rest: Vec<Option<T>> = (0..pieces.len()).map(|_| None).collect();
    let first = rayon_core::in_place_scope(|scope| {
        let work = &work;
        for (piece, slot) in pieces.zip(&mut rest) {
            scope.spawn(move |_| *slot = Some(work(piece)));
        }
        work(first)
    });
    let mut results = Vec::with_capacity(rest.len() + 1);
    results.push(first);
    // Every spawned piece has finished when the scope returns (a panic would have been passed on).
    results.extend(rest.into_iter().flatten());
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_filled_once_in_its_piece() {
        // (items, piece)
        for (len, piece) in [(0, 1), (5, 10), (1000, 1), (1000, 64), (4097, 1024), (100, 0)] {
            let mut out = vec![usize::MAX; len];
            let pieces = std::sync::Mutex::new(Vec::new());
            fill_over_cores(&mut out, piece, |range, part| {
                assert_eq!(range.len(), part.len());
                assert_eq!(range.start % piece.max(1), 0, "pieces start on multiples of {piece}");
                for (i, slot) in range.clone().zip(part) {
                    assert_eq!(*slot, usize::MAX);
                    *slot = i;
                }
                pieces.lock().unwrap().push(range);
            });
            assert_eq!(out, (0..len).collect::<Vec<_>>());
            let pieces = pieces.into_inner().unwrap();
            assert_eq!(pieces.len(), len.div_ceil(piece.max(1)), "{len} items in pieces of {piece}");
        }
    }

    #[test]
    fn a_panic_in_a_piece_reaches_the_caller() {
        let mut out = vec![0u8; 10_000];
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fill_over_cores(&mut out, 100, |range, _| assert!(!range.contains(&7_777), "piece with row 7777"));
        }));
        assert!(caught.is_err());
    }

    #[test]
    fn stretches_cover_the_items_in_order_and_keep_blocks_whole() {
        // (items, min_per_core, align)
        let cases = [(0..0, 1, 1), (0..5, 10, 1), (3..1000, 1, 1), (0..1000, 32, 64), (7..107, 10, 16)];
        for (items, min_per_core, align) in cases {
            let stretches = over_cores(items.clone(), min_per_core, align, |r| r);
            let joined: Vec<usize> = stretches.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(joined, items.clone().collect::<Vec<_>>(), "{items:?}");
            assert!(stretches.len() <= cores().max(1));
            for r in &stretches[..stretches.len() - 1] {
                assert_eq!((r.end - items.start) % align, 0, "{items:?} cut at {}", r.end);
                assert!(r.len() >= min_per_core);
            }
        }
    }
}
