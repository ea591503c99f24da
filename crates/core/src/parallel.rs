//! Batch work cut over the machine's cores (scoring a file, estimating every
//! cycle of a history). Results come back in input order and each piece is
//! computed exactly as on one core, so a batch gives the same numbers on an
//! edge box of one core as on a server of many.

use std::ops::Range;

/// The machine's cores (asked once: the call costs a system call).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
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

/// `work` over `items` (cut as [`stretches`] says), results in order; the
/// calling thread computes the first stretch.
pub fn over_cores<T: Send>(
    items: Range<usize>,
    min_per_core: usize,
    align: usize,
    work: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    on_threads(stretches(items, min_per_core, align), work)
}

/// `work` writing `out` in place, cut over the cores as [`over_cores`]:
/// each call gets the indices of its stretch and that part of `out` (no
/// per-stretch buffers to allocate and join).
pub fn fill_over_cores<T: Send>(
    out: &mut [T],
    min_per_core: usize,
    align: usize,
    work: impl Fn(Range<usize>, &mut [T]) + Sync,
) {
    let mut rest = out;
    let mut parts = Vec::new();
    for range in stretches(0..rest.len(), min_per_core, align) {
        let (part, tail) = rest.split_at_mut(range.len());
        parts.push((range, part));
        rest = tail;
    }
    on_threads(parts, |(range, part)| work(range, part));
}

/// `work` on each piece, one thread per piece after the first, which the
/// calling thread takes; results in order, a worker's panic passed on.
fn on_threads<P: Send, T: Send>(pieces: Vec<P>, work: impl Fn(P) -> T + Sync) -> Vec<T> {
    let mut pieces = pieces.into_iter();
    let Some(first) = pieces.next() else {
        return Vec::new();
    };
    if pieces.len() == 0 {
        return vec![work(first)];
    }
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = pieces.map(|piece| scope.spawn(move || work(piece))).collect();
        let mut results = Vec::with_capacity(handles.len() + 1);
        results.push(work(first));
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_cover_the_items_in_order_and_keep_blocks_whole() {
        // (items, min_per_core, align)
        let cases = [(0..0, 1, 1), (0..5, 10, 1), (3..1000, 1, 1), (0..1000, 32, 64), (7..107, 10, 16)];
        for (items, min_per_core, align) in cases {
            let stretches = over_cores(items.clone(), min_per_core, align, |r| r);
            let joined: Vec<usize> = stretches.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(joined, items.clone().collect::<Vec<_>>(), "{items:?}");
            // In place: every slot written once, with its own index.
            let mut out = vec![usize::MAX; items.len()];
            fill_over_cores(&mut out, min_per_core, align, |range, part| {
                assert_eq!(range.len(), part.len());
                for (i, slot) in range.zip(part) {
                    assert_eq!(*slot, usize::MAX);
                    *slot = i;
                }
            });
            assert_eq!(out, (0..items.len()).collect::<Vec<_>>());
            assert!(stretches.len() <= cores().max(1));
            for r in &stretches[..stretches.len() - 1] {
                assert_eq!((r.end - items.start) % align, 0, "{items:?} cut at {}", r.end);
                assert!(r.len() >= min_per_core);
            }
        }
    }
}
