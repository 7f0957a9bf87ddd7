//! The `needs` graph: each stage's `needs` list, unknown and self needs, cycles, and the
//! order of the plan.

use super::Checker;
use super::stages::StageDraft;
use crate::compile::Pos;
use crate::compile::tree::{Kind, Node, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

impl Checker {
    pub(super) fn needs(&mut self, node: &Node) -> Vec<(String, Pos)> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Scalar(s) if s.value() == Value::Str => vec![node],
            Kind::Seq(items) => items.iter().collect(),
            Kind::Alias => return Vec::new(),
            _ => {
                let found = node.describe();
                self.err(node.pos, format!("\"needs\" must be a list of stage names, found {found}"));
                return Vec::new();
            }
        };
        let mut needs: Vec<(String, Pos)> = Vec::new();
        let mut seen = HashSet::new();
        for item in items {
            let Some(name) = self.name_text(item, "a stage name in \"needs\"") else { continue };
            if !seen.insert(name) {
                self.err(item.pos, format!("stage \"{name}\" is listed twice in \"needs\""));
                continue;
            }
            needs.push((name.to_string(), item.pos));
        }
        needs
    }

    /// Checks `needs` (unknown stages, self, cycles) and returns the plan order: Kahn's
    /// algorithm, always taking the earliest-declared ready stage. `None` on any problem.
    pub(super) fn graph(&mut self, stages: &[StageDraft]) -> Option<Vec<usize>> {
        let index: HashMap<&str, usize> =
            stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
        let mut ok = true;
        for (i, stage) in stages.iter().enumerate() {
            for (name, pos) in &stage.needs {
                match index.get(name.as_str()) {
                    Some(&j) if j == i => {
                        self.err(*pos, format!("stage \"{name}\" needs itself"));
                        ok = false;
                    }
                    Some(&j) => needs[i].push(j),
                    None => {
                        let message = self.unknown_stage("needs", name, stages);
                        self.err(*pos, message);
                        ok = false;
                    }
                }
            }
        }

        for cycle in cycles(&needs) {
            let mut names: Vec<String> = cycle.iter().map(|&i| stages[i].name.clone()).collect();
            names.push(names[0].clone());
            // A very long cycle keeps its ends; the middle is counted, not listed.
            const SHOWN: usize = 6;
            if names.len() > 2 * SHOWN + 1 {
                let hidden = names.len() - 2 * SHOWN;
                names.splice(SHOWN..names.len() - SHOWN, [format!("({hidden} more)")]);
            }
            let first = stages[cycle[0]].key.pos;
            self.err(first, format!("cycle in needs: {}", names.join(" -> ")));
            ok = false;
        }
        if !ok {
            return None;
        }

        let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
        for (i, list) in needs.iter().enumerate() {
            for &j in list {
                dependents[j].push(i);
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..stages.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(stages.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        (order.len() == stages.len()).then_some(order)
    }
}

/// One cycle per strongly connected component of more than one stage (self-needs are
/// reported on their own): the shortest cycle through the component's earliest-declared
/// stage, as stage indexes starting with it, following `needs` edges.
fn cycles(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = needs.len();
    // Kosaraju, iteratively. Pass 1: finishing order.
    let mut visited = vec![false; n];
    let mut finished = Vec::with_capacity(n);
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, edge)) = stack.last_mut() {
            if let Some(&next) = needs[*node].get(*edge) {
                *edge += 1;
                if !visited[next] {
                    visited[next] = true;
                    stack.push((next, 0));
                }
            } else {
                finished.push(*node);
                stack.pop();
            }
        }
    }
    // Pass 2: components on the reversed graph.
    let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, list) in needs.iter().enumerate() {
        for &j in list {
            reverse[j].push(i);
        }
    }
    let mut component = vec![usize::MAX; n];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for &start in finished.iter().rev() {
        if component[start] != usize::MAX {
            continue;
        }
        let id = components.len();
        let mut members = vec![start];
        component[start] = id;
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &prev in &reverse[node] {
                if component[prev] == usize::MAX {
                    component[prev] = id;
                    members.push(prev);
                    stack.push(prev);
                }
            }
        }
        components.push(members);
    }

    let mut out = Vec::new();
    let mut parent = vec![usize::MAX; n];
    for members in components.iter().filter(|m| m.len() > 1) {
        let start = *members.iter().min().expect("non-empty component");
        let id = component[start];
        // BFS inside the component until an edge leads back to the start.
        let mut queue = std::collections::VecDeque::from([start]);
        parent[start] = start;
        let mut last = None;
        'search: while let Some(node) = queue.pop_front() {
            for &next in &needs[node] {
                if component[next] != id {
                    continue;
                }
                if next == start {
                    last = Some(node);
                    break 'search;
                }
                if parent[next] == usize::MAX {
                    parent[next] = node;
                    queue.push_back(next);
                }
            }
        }
        let Some(mut node) = last else { continue };
        let mut path = vec![node];
        while node != start {
            node = parent[node];
            path.push(node);
        }
        path.reverse();
        out.push(path);
    }
    out.sort_by_key(|c| c[0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_once_per_component() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 4 -> 3, 5 -> 0 (downstream, no cycle of its own).
        let needs = vec![vec![1], vec![2], vec![0], vec![4], vec![3], vec![0]];
        assert_eq!(cycles(&needs), vec![vec![0, 1, 2], vec![3, 4]]);
        // Two cycles sharing a stage form one component: reported once, shortest first.
        let needs = vec![vec![1, 2], vec![0], vec![3], vec![0]];
        assert_eq!(cycles(&needs), vec![vec![0, 1]]);
        assert!(cycles(&[vec![], vec![0]]).is_empty());
    }
}
