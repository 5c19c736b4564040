//! A unified diff of two texts, line by line, as `diff -u` prints it: what
//! `handoff test --snapshot` shows when a trace drifted from the stored one.
//!
//! Lines are matched with Myers' algorithm after the common head and tail are
//! set aside. Two traces that differ in more than [`MAX_EDITS`] lines are not
//! matched further: the rest shows as removed and added, which says as much
//! and keeps the work bounded.

use std::fmt::Write as _;

/// The most line edits matched one by one; past it, the middle is replaced whole.
const MAX_EDITS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// The diff of `old` and `new` with `context` unchanged lines around each
/// change, under `---`/`+++` headers; empty when they are the same.
pub fn unified(old: &str, new: &str, context: usize, headers: (&str, &str)) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = script(&a, &b);
    if ops.iter().all(|op| *op == Op::Same) {
        return String::new();
    }
    let mut out = format!("--- {}\n+++ {}\n", headers.0, headers.1);
    // Each op's position in both texts.
    let mut at = Vec::with_capacity(ops.len());
    let (mut i, mut j) = (0, 0);
    for op in &ops {
        at.push((i, j));
        match op {
            Op::Same => (i, j) = (i + 1, j + 1),
            Op::Removed => i += 1,
            Op::Added => j += 1,
        }
    }
    for (first, last) in hunks(&ops, context) {
        let (i0, j0) = at[first];
        let (mut i1, mut j1) = (i0, j0);
        for op in &ops[first..last] {
            match op {
                Op::Same => (i1, j1) = (i1 + 1, j1 + 1),
                Op::Removed => i1 += 1,
                Op::Added => j1 += 1,
            }
        }
        let _ = writeln!(out, "@@ -{} +{} @@", range(i0, i1), range(j0, j1));
        // A changed run shows its removed lines before its added ones.
        let mut k = first;
        while k < last {
            if ops[k] == Op::Same {
                line(&mut out, ' ', a[at[k].0]);
                k += 1;
                continue;
            }
            let end = (k..last).find(|&e| ops[e] == Op::Same).unwrap_or(last);
            for e in k..end {
                if ops[e] == Op::Removed {
                    line(&mut out, '-', a[at[e].0]);
                }
            }
            for e in k..end {
                if ops[e] == Op::Added {
                    line(&mut out, '+', b[at[e].1]);
                }
            }
            k = end;
        }
    }
    out
}

fn line(out: &mut String, tag: char, text: &str) {
    out.push(tag);
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

/// A hunk's range as `diff -u` writes it: `start,len`, `start` alone for
/// one line, and the line before for none.
fn range(from: usize, to: usize) -> String {
    match to - from {
        1 => format!("{}", from + 1),
        0 => format!("{from},0"),
        len => format!("{},{len}", from + 1),
    }
}

/// The ops each hunk covers, `first..last`: changes less than two contexts
/// apart share a hunk, and each hunk has up to `context` same lines around.
fn hunks(ops: &[Op], context: usize) -> Vec<(usize, usize)> {
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k] != Op::Same).collect();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let first = k.saturating_sub(context);
        let last = (k + 1 + context).min(ops.len());
        match out.last_mut() {
            // The same lines between two changes fit in both contexts.
            Some(hunk) if first <= hunk.1 => hunk.1 = last,
            _ => out.push((first, last)),
        }
    }
    out
}

/// The edit script from `a` to `b`: the common head and tail, and Myers'
/// shortest script for the middle.
fn script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut ops = vec![Op::Same; head];
    ops.extend(middle(&a[head..a.len() - tail], &b[head..b.len() - tail]));
    ops.extend(std::iter::repeat_n(Op::Same, tail));
    ops
}

/// Myers' greedy algorithm, keeping each round's furthest reaches to walk
/// the script back; past [`MAX_EDITS`], everything is removed and added.
fn middle(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let whole = || {
        let mut ops = vec![Op::Removed; a.len()];
        ops.extend(std::iter::repeat_n(Op::Added, b.len()));
        ops
    };
    if n == 0 || m == 0 {
        return whole();
    }
    let limit = (a.len() + b.len()).min(MAX_EDITS) as isize;
    let offset = limit + 1;
    // v[k + offset]: the furthest x on diagonal k (k = x - y) in this round.
    let mut v = vec![0isize; (2 * offset + 1) as usize];
    let mut rounds: Vec<Vec<isize>> = Vec::new();
    let mut reached = None;
    'search: for d in 0..=limit {
        for k in (-d..=d).step_by(2) {
            let down =
                k == -d || (k != d && v[(k - 1 + offset) as usize] < v[(k + 1 + offset) as usize]);
            let mut x = if down {
                v[(k + 1 + offset) as usize]
            } else {
                v[(k - 1 + offset) as usize] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[(k + offset) as usize] = x;
            if x >= n && y >= m {
                rounds.push(v.clone());
                reached = Some(d);
                break 'search;
            }
        }
        rounds.push(v.clone());
    }
    let Some(d_end) = reached else {
        return whole();
    };
    // Walk back from (n, m), one round at a time.
    let mut ops = Vec::with_capacity((n + m) as usize);
    let (mut x, mut y) = (n, m);
    for d in (1..=d_end).rev() {
        let prev = &rounds[(d - 1) as usize];
        let k = x - y;
        let down = k == -d
            || (k != d && prev[(k - 1 + offset) as usize] < prev[(k + 1 + offset) as usize]);
        let k_prev = if down { k + 1 } else { k - 1 };
        let x_prev = prev[(k_prev + offset) as usize];
        let y_prev = x_prev - k_prev;
        // The snake after the edit: lines both have.
        let (x_start, y_start) = if down {
            (x_prev, y_prev + 1)
        } else {
            (x_prev + 1, y_prev)
        };
        while x > x_start && y > y_start {
            ops.push(Op::Same);
            x -= 1;
            y -= 1;
        }
        ops.push(if down { Op::Added } else { Op::Removed });
        (x, y) = (x_prev, y_prev);
    }
    while x > 0 && y > 0 {
        ops.push(Op::Same);
        x -= 1;
        y -= 1;
    }
    ops.reverse();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a unified diff's lines back: the old text's lines and the new one's.
    fn sides(diff: &str) -> (Vec<String>, Vec<String>) {
        let (mut old, mut new) = (Vec::new(), Vec::new());
        for l in diff.lines().skip(2).filter(|l| !l.starts_with("@@")) {
            match l.split_at(1) {
                (" ", rest) => {
                    old.push(rest.to_string());
                    new.push(rest.to_string());
                }
                ("-", rest) => old.push(rest.to_string()),
                ("+", rest) => new.push(rest.to_string()),
                _ => {}
            }
        }
        (old, new)
    }

    #[test]
    fn a_changed_line_shows_with_its_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\n";
        let new = "a\nb\nc\nD\ne\nf\ng\n";
        assert_eq!(
            unified(old, new, 2, ("stored", "this run")),
            "--- stored\n+++ this run\n@@ -2,5 +2,5 @@\n b\n c\n-d\n+D\n e\n f\n"
        );
    }

    #[test]
    fn changes_far_apart_are_two_hunks_and_near_ones_one() {
        let lines = |changed: &[usize]| -> String {
            (1..=20)
                .map(|i| match changed.contains(&i) {
                    true => format!("changed {i}\n"),
                    false => format!("{i}\n"),
                })
                .collect()
        };
        let old = lines(&[]);
        // Five same lines between the changes: more than two contexts of two.
        let diff = unified(&old, &lines(&[3, 9]), 2, ("a", "b"));
        assert_eq!(diff.matches("@@ -").count(), 2, "{diff}");
        assert!(
            diff.contains("@@ -1,5 +1,5 @@\n 1\n 2\n-3\n+changed 3\n 4\n 5\n"),
            "{diff}"
        );
        // Four: exactly two contexts, one hunk.
        let diff = unified(&old, &lines(&[3, 8]), 2, ("a", "b"));
        assert_eq!(diff.matches("@@ -").count(), 1, "{diff}");
        assert!(diff.contains("@@ -1,10 +1,10 @@\n"), "{diff}");
    }

    #[test]
    fn added_and_removed_lines_have_empty_ranges_where_due() {
        assert_eq!(
            unified("a\n", "a\nb\n", 2, ("a", "b")),
            "--- a\n+++ b\n@@ -1 +1,2 @@\n a\n+b\n"
        );
        assert_eq!(
            unified("a\n", "", 2, ("a", "b")),
            "--- a\n+++ b\n@@ -1 +0,0 @@\n-a\n"
        );
        assert_eq!(
            unified("", "a\n", 2, ("a", "b")),
            "--- a\n+++ b\n@@ -0,0 +1 @@\n+a\n"
        );
        assert_eq!(unified("same\n", "same\n", 2, ("a", "b")), "");
    }

    #[test]
    fn a_missing_last_newline_is_said() {
        assert_eq!(
            unified("a\n", "a", 0, ("a", "b")),
            "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n"
        );
    }

    #[test]
    fn every_diff_gives_back_both_texts() {
        // Pseudo-random texts over a small alphabet, so lines repeat.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..300 {
            let text = |next: &mut dyn FnMut() -> usize| {
                let lines = next() % 30;
                (0..lines)
                    .map(|_| format!("{}\n", next() % 5))
                    .collect::<String>()
            };
            let (old, new) = (text(&mut next), text(&mut next));
            let diff = unified(&old, &new, usize::MAX / 4, ("a", "b"));
            if old == new {
                assert!(diff.is_empty());
                continue;
            }
            let (o, n) = sides(&diff);
            assert_eq!(o, old.lines().collect::<Vec<_>>(), "{diff}");
            assert_eq!(n, new.lines().collect::<Vec<_>>(), "{diff}");
            // Myers finds a shortest script: no more edits than lines that differ
            // by the longest common subsequence.
            let edits = diff
                .lines()
                .skip(2)
                .filter(|l| l.starts_with(['-', '+']))
                .count();
            let a: Vec<&str> = old.lines().collect();
            let b: Vec<&str> = new.lines().collect();
            let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
            for i in (0..a.len()).rev() {
                for j in (0..b.len()).rev() {
                    lcs[i][j] = if a[i] == b[j] {
                        lcs[i + 1][j + 1] + 1
                    } else {
                        lcs[i + 1][j].max(lcs[i][j + 1])
                    };
                }
            }
            assert_eq!(edits, a.len() + b.len() - 2 * lcs[0][0], "{diff}");
        }
    }

    #[test]
    fn texts_too_different_are_replaced_whole_in_bounded_work() {
        let old: String = (0..3_000).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..3_000).map(|i| format!("new {i}\n")).collect();
        let diff = unified(&old, &new, 2, ("a", "b"));
        assert!(diff.starts_with("--- a\n+++ b\n@@ -1,3000 +1,3000 @@\n-old 0\n"));
        assert_eq!(diff.lines().filter(|l| l.starts_with('-')).count(), 3_001);
    }
}
