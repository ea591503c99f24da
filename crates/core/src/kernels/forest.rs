//! The isolation forest's batch walk: every tree re-laid as a complete
//! binary tree of integer keys, walked ten rows at a time, one step four
//! instructions of x86-64 assembly (a plain-Rust step elsewhere and with
//! `USAN_SIMD=off`).

use super::simd_allowed;

/// One node of a grown tree, as the layout reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TreeNode {
    /// `(feature, split value, left child, right child)`: rows with
    /// `value < split` go left. None for a leaf.
    pub split: Option<(u32, f64, u32, u32)>,
    /// The expected path length below the node when a walk ends there, c(size).
    pub path_below: f64,
}

/// The forest re-laid as complete binary trees of depth `depth` for batch
/// scoring, numbered from 1 as a heap: slot `u`'s children are `2u` (left)
/// and `2u + 1` (right), so a walk is `depth` steps of one comparison each
/// with no pointer to chase. A leaf above the bottom becomes a chain of
/// always-left slots ending at a bottom slot (`2^depth ..< 2^(depth+1)`)
/// whose path length (depth + c(size)) is kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompleteForest {
    depth: usize,
    /// Per tree `2 · 2^depth` words: at `u` (`1 ..< 2^depth`) the split's
    /// [`order_key`] minus one ([`ALWAYS_LEFT`] for the chains below early
    /// leaves), at `2^depth + u` the slot's feature offset
    /// (feature × [`Self::GROUP`]); word 0 and word `2^depth` are unused.
    /// A row goes right when `key − 1 < value key`, that is when
    /// `value ≥ split` as in the isolation forest's row-by-row walk, and one base address
    /// per tree serves both loads of a step.
    words: Vec<u64>,
    /// Per tree `2^depth` path lengths (depth + c(size)) of the bottom slots.
    leaf_paths: Vec<f64>,
    /// Features of the rows the forest was grown on.
    width: usize,
}

/// `x`'s bits mapped so that unsigned integer order is `f64` order for
/// finite values (−0 taken as +0, as `<` does). Keys of finite values lie
/// between 2^52 and `order_key(+∞)`, so `key − 1` never wraps.
fn order_key(x: f64) -> u64 {
    let bits = (x + 0.0).to_bits();
    let sign = ((bits as i64) >> 63) as u64;
    bits ^ (sign | 1 << 63)
}

/// The always-left split word: no finite value's key is above it.
const ALWAYS_LEFT: u64 = 0xFFF0_0000_0000_0000 - 1;

/// One monomorphised walk per depth: `by_depth!(forest, depth, walk::<FAST>(args))`
/// calls `forest.walk::<depth, FAST>(args)`.
macro_rules! by_depth {
    ($this:expr, $depth:expr, $walk:ident::<$fast:literal>( $($arg:expr),* )) => {
        match $depth {
            1 => $this.$walk::<1, $fast>($($arg),*),
            2 => $this.$walk::<2, $fast>($($arg),*),
            3 => $this.$walk::<3, $fast>($($arg),*),
            4 => $this.$walk::<4, $fast>($($arg),*),
            5 => $this.$walk::<5, $fast>($($arg),*),
            6 => $this.$walk::<6, $fast>($($arg),*),
            7 => $this.$walk::<7, $fast>($($arg),*),
            8 => $this.$walk::<8, $fast>($($arg),*),
            9 => $this.$walk::<9, $fast>($($arg),*),
            10 => $this.$walk::<10, $fast>($($arg),*),
            11 => $this.$walk::<11, $fast>($($arg),*),
            _ => $this.$walk::<12, $fast>($($arg),*),
        }
    };
}

impl CompleteForest {
    /// Deepest trees laid out completely (2^12 slots per tree); deeper forests score row by row.
    pub(crate) const MAX_DEPTH: usize = 12;
    /// Rows walked together through a tree: independent walks keep the core
    /// busy while each waits for its two dependent loads, and 10 is as many
    /// as x86-64 keeps in registers beside the three the step needs (8 and
    /// 12 measured slower).
    pub(crate) const GROUP: usize = 10;

    /// The trees whose roots are `roots`, their nodes read through `node`,
    /// grown to at most `depth` levels on rows of `width` values.
    pub(crate) fn new(roots: &[u32], depth: usize, width: usize, node: impl Fn(u32) -> TreeNode) -> Self {
        let slots = 1usize << depth;
        let mut forest = CompleteForest {
            depth: depth.clamp(1, Self::MAX_DEPTH),
            words: Vec::with_capacity(2 * slots * roots.len()),
            leaf_paths: vec![0.0; slots * roots.len()],
            width,
        };
        for (t, &root) in roots.iter().enumerate() {
            forest.words.extend(std::iter::repeat_n(ALWAYS_LEFT, slots));
            forest.words.extend(std::iter::repeat_n(0, slots));
            forest.place(&node, t, root, 1, 0);
        }
        forest
    }

    /// Put `node` (at `level`) in slot `slot` of tree `tree`, then its subtree.
    fn place(&mut self, nodes: &impl Fn(u32) -> TreeNode, tree: usize, node: u32, slot: usize, level: usize) {
        let slots = 1usize << self.depth;
        let n = nodes(node);
        if let Some((feature, split, left, right)) = n.split
            && level < self.depth
        {
            let words = &mut self.words[2 * slots * tree..2 * slots * (tree + 1)];
            words[slot] = order_key(split) - 1;
            // The walk's loads rely on every offset being below `width` features:
            // a feature beyond the rows' width is taken as the last.
            words[slots + slot] = u64::from(feature.min(self.width.saturating_sub(1) as u32)) * Self::GROUP as u64;
            self.place(nodes, tree, left, 2 * slot, level + 1);
            self.place(nodes, tree, right, 2 * slot + 1, level + 1);
            return;
        }
        // A leaf: its slots keep `ALWAYS_LEFT` down to the bottom.
        let mut bottom = slot;
        for _ in level..self.depth {
            bottom *= 2;
        }
        self.leaf_paths[tree * slots + bottom - slots] = level as f64 + n.path_below;
    }

    /// Each row's path length summed over all trees, into `paths`; `rows`
    /// holds complete rows of `width` values back to back.
    pub(crate) fn path_sums(&self, rows: &[f64], paths: &mut [f64]) {
        const G: usize = CompleteForest::GROUP;
        let (slots, width) = (1usize << self.depth, self.width);
        assert_eq!(rows.len(), paths.len() * width, "path_sums takes whole rows");
        paths.fill(0.0);
        // Each group's value keys feature-major (value f of row k at f·G + k).
        let stretch = width * G;
        let mut values = vec![0u64; stretch * paths.len().div_ceil(G)];
        for (group, group_values) in rows.chunks(G * width).zip(values.chunks_exact_mut(stretch)) {
            for (k, row) in group.chunks_exact(width).enumerate() {
                for (f, v) in row.iter().enumerate() {
                    group_values[f * G + k] = order_key(*v);
                }
            }
        }
        let fast = simd_allowed();
        for (tree, leaf_paths) in self.words.chunks_exact(2 * slots).zip(self.leaf_paths.chunks_exact(slots)) {
            for (group_values, group_paths) in values.chunks_exact(stretch).zip(paths.chunks_mut(G)) {
                let ends = if fast {
                    by_depth!(self, self.depth, walk::<true>(tree, group_values))
                } else {
                    by_depth!(self, self.depth, walk::<false>(tree, group_values))
                };
                for (path, end) in group_paths.iter_mut().zip(ends) {
                    *path += leaf_paths[end & (slots - 1)];
                }
            }
        }
    }

    /// Walk a group of rows (feature-major, see [`Self::path_sums`]) down
    /// one tree of depth `DEPTH` (its words, see [`CompleteForest::words`]);
    /// the bottom slots they end in. `FAST`: the assembly step where there is one.
    #[inline(always)]
    fn walk<const DEPTH: usize, const FAST: bool>(&self, tree: &[u64], group_values: &[u64]) -> [usize; Self::GROUP] {
        let slots = 1usize << DEPTH;
        // The walk's loads are unchecked, so check here what makes them safe:
        // a tree is exactly 2^DEPTH splits and 2^DEPTH offsets, and a group
        // holds `width` features of GROUP rows (every offset is feature ×
        // GROUP with feature < width: `place` sets no other).
        assert_eq!(tree.len(), 2 * slots);
        assert_eq!(group_values.len(), self.width * Self::GROUP);
        // The root is the same node for every row: one split against GROUP
        // contiguous values, then the walks part.
        let root_split = tree[1];
        let root_offset = tree[slots + 1] as usize;
        let root_values = &group_values[root_offset..root_offset + Self::GROUP];
        let mut at = [0usize; Self::GROUP];
        for (slot, value) in at.iter_mut().zip(root_values) {
            *slot = 2 + usize::from(root_split < *value);
        }
        for _ in 1..DEPTH {
            // SAFETY: before the step from level l every slot is below
            // 2^(l+1) ≤ 2^DEPTH, and the lengths are checked above.
            unsafe { descend::<DEPTH, FAST>(tree, group_values, &mut at) };
        }
        at
    }
}

/// One level of a walk for every row of a group: slot `u` of row `k`
/// becomes `2u + (row k goes right)`; in assembly where there is a version
/// for this CPU and `FAST`, in Rust otherwise.
///
/// # Safety
/// `tree` holds `2 · 2^DEPTH` words of [`CompleteForest::words`], every
/// slot in `at` is below `2^DEPTH`, and `group_values` holds a group's keys
/// for every feature offset stored in `tree`.
#[inline(always)]
unsafe fn descend<const DEPTH: usize, const FAST: bool>(
    tree: &[u64],
    group_values: &[u64],
    at: &mut [usize; CompleteForest::GROUP],
) {
    #[cfg(target_arch = "x86_64")]
    if FAST {
        // SAFETY: the caller's conditions make every load in bounds.
        unsafe { descend_x86_64::<DEPTH>(tree, group_values, at) };
        return;
    }
    // SAFETY: the caller's conditions make every load in bounds.
    unsafe { descend_portable::<DEPTH>(tree, group_values, at) };
}

/// [`descend`] in Rust: the reference, and the step on other targets.
///
/// # Safety
/// See [`descend`].
#[inline(always)]
unsafe fn descend_portable<const DEPTH: usize>(
    tree: &[u64],
    group_values: &[u64],
    at: &mut [usize; CompleteForest::GROUP],
) {
    for (k, slot) in at.iter_mut().enumerate() {
        // SAFETY: `*slot` < 2^DEPTH, so both words are inside `tree`; the
        // offset read plus `k` < GROUP is inside `group_values`.
        let (split, value) = unsafe {
            let offset = *tree.get_unchecked((1 << DEPTH) + *slot) as usize;
            (*tree.get_unchecked(*slot), *group_values.get_unchecked(offset + k))
        };
        // An index, not a branch: random data would mispredict half the splits.
        *slot = 2 * *slot + usize::from(split < value);
    }
}

/// The four instructions of one row's step: load the slot's feature
/// offset, load the row's value key there, compare the split word with it
/// (the carry is "goes right") and `adc` the slot onto itself (2u + carry).
/// LLVM spends eight on the same step (a `setb`, a zeroing, spills).
#[cfg(target_arch = "x86_64")]
macro_rules! descend_row {
    ($slot:ident, $row:literal) => {
        concat!(
            "mov {t}, [{tree} + {",
            stringify!($slot),
            "}*8 + {offsets}]\n",
            "mov {t}, [{values} + {t}*8 + 8*",
            stringify!($row),
            "]\n",
            "cmp [{tree} + {",
            stringify!($slot),
            "}*8], {t}\n",
            "adc {",
            stringify!($slot),
            "}, {",
            stringify!($slot),
            "}",
        )
    };
}

/// [`descend`] for x86-64: every row's slot stays in a register.
///
/// # Safety
/// See [`descend`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn descend_x86_64<const DEPTH: usize>(
    tree: &[u64],
    group_values: &[u64],
    at: &mut [usize; CompleteForest::GROUP],
) {
    // SAFETY: the loads are those of `descend_portable`, in bounds under the
    // same conditions; the assembly only reads memory and sets flags.
    unsafe {
        std::arch::asm!(
            descend_row!(u0, 0),
            descend_row!(u1, 1),
            descend_row!(u2, 2),
            descend_row!(u3, 3),
            descend_row!(u4, 4),
            descend_row!(u5, 5),
            descend_row!(u6, 6),
            descend_row!(u7, 7),
            descend_row!(u8, 8),
            descend_row!(u9, 9),
            tree = in(reg) tree.as_ptr(),
            values = in(reg) group_values.as_ptr(),
            offsets = const 8usize << DEPTH,
            t = out(reg) _,
            u0 = inout(reg) at[0],
            u1 = inout(reg) at[1],
            u2 = inout(reg) at[2],
            u3 = inout(reg) at[3],
            u4 = inout(reg) at[4],
            u5 = inout(reg) at[5],
            u6 = inout(reg) at[6],
            u7 = inout(reg) at[7],
            u8 = inout(reg) at[8],
            u9 = inout(reg) at[9],
            options(pure, readonly, nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    /// `trees` random trees of at most `depth` levels over `width` features
    /// in one node array: tree `t`'s node `i` (from 1) at `t · 2^(depth+1) + i`,
    /// its children at `2i` and `2i + 1`, the bottom level leaves.
    fn random_forest(trees: usize, depth: usize, width: usize, seed: u64) -> (Vec<TreeNode>, Vec<u32>) {
        let mut g = SeededNormal::new(seed);
        let stride = 2usize << depth;
        let mut nodes = Vec::new();
        for t in 0..trees {
            for i in 0..stride {
                let (left, right) = ((t * stride + 2 * i) as u32, (t * stride + 2 * i + 1) as u32);
                // Some internal nodes are leaves too: the layout chains them down to the bottom.
                let internal = i >= 1 && i < 1 << depth && (i == 1 || g.uniform() > 0.2);
                let split = internal.then(|| (g.below(width) as u32, g.normal(), left, right));
                nodes.push(TreeNode { split, path_below: g.uniform() });
            }
        }
        let roots = (0..trees).map(|t| (t * stride + 1) as u32).collect();
        (nodes, roots)
    }

    /// The path length of `row` from `root`, by the definition: left when `value < split`.
    fn walk_by_definition(nodes: &[TreeNode], root: u32, row: &[f64]) -> f64 {
        let (mut at, mut level) = (root as usize, 0.0);
        while let Some((feature, split, left, right)) = nodes[at].split {
            at = if row[feature as usize] < split { left as usize } else { right as usize };
            level += 1.0;
        }
        level + nodes[at].path_below
    }

    #[test]
    fn path_sums_equal_the_walk_by_definition_at_every_depth() {
        for (depth, width) in [(1, 1), (3, 2), (8, 5), (12, 3)] {
            let (nodes, roots) = random_forest(3, depth, width, depth as u64);
            let forest = CompleteForest::new(&roots, depth, width, |i| nodes[i as usize]);
            let mut g = SeededNormal::new(99);
            // 23 rows: two whole groups and a short one.
            let rows: Vec<Vec<f64>> = (0..23).map(|_| (0..width).map(|_| g.normal()).collect()).collect();
            let mut paths = vec![0.0; rows.len()];
            forest.path_sums(&rows.concat(), &mut paths);
            for (row, path) in rows.iter().zip(paths) {
                let expected: f64 = roots.iter().map(|&root| walk_by_definition(&nodes, root, row)).sum();
                assert!((expected - path).abs() < 1e-9, "depth {depth}: {expected} vs {path}");
            }
        }
    }

    #[test]
    fn order_keys_sort_as_the_values_do() {
        let values = [
            f64::MIN,
            -1e300,
            -1.0,
            -f64::MIN_POSITIVE,
            -5e-324,
            -0.0,
            0.0,
            5e-324,
            f64::MIN_POSITIVE,
            1.0,
            1e300,
            f64::MAX,
        ];
        for a in values {
            for b in values {
                assert_eq!(a < b, order_key(a) < order_key(b), "{a:e} < {b:e}");
                // The walk's rule: right when split key − 1 < value key.
                assert_eq!(b >= a, order_key(a) - 1 < order_key(b), "{b:e} ≥ {a:e}");
            }
            assert!(ALWAYS_LEFT >= order_key(a), "{a:e} would leave an always-left slot");
        }
        assert_eq!(ALWAYS_LEFT, order_key(f64::INFINITY) - 1);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_assembly_step_equals_the_portable_step() {
        const DEPTH: usize = 8;
        let mut g = SeededNormal::new(4);
        let width = 6;
        let (nodes, roots) = random_forest(5, DEPTH, width, 1);
        let complete = CompleteForest::new(&roots, DEPTH, width, |i| nodes[i as usize]);
        let group_values: Vec<u64> = (0..width * CompleteForest::GROUP).map(|_| order_key(g.normal())).collect();
        for tree in complete.words.chunks_exact(2 << DEPTH) {
            let (mut by_assembly, mut portable) = ([1; CompleteForest::GROUP], [1; CompleteForest::GROUP]);
            for level in 0..DEPTH {
                // SAFETY: slots of level l are below 2^(l+1) ≤ 2^DEPTH; `tree` and
                // `group_values` have the lengths `walk` checks.
                unsafe {
                    descend_x86_64::<DEPTH>(tree, &group_values, &mut by_assembly);
                    descend_portable::<DEPTH>(tree, &group_values, &mut portable);
                }
                assert_eq!(by_assembly, portable, "level {level}");
            }
            assert!(portable.iter().all(|&slot| (1 << DEPTH..2 << DEPTH).contains(&slot)), "{portable:?}");
        }
    }
}
