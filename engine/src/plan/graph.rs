//! A plan's DAG for people: steps or components, as Mermaid or Graphviz dot (`graph`).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Plan;

/// A plan's DAG, of steps or of components: nodes (id, group) and edges (from dependency to
/// dependent), deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanGraph {
    pub nodes: Vec<(String, String)>,
    pub edges: Vec<(String, String)>,
}

impl PlanGraph {
    /// Every step, grouped by component.
    pub fn of_steps(plan: &Plan) -> PlanGraph {
        let (nodes, edges) = step_graph(plan);
        PlanGraph { nodes, edges }
    }

    /// Every component, grouped by namespace; an edge where a step of one waits for a step of
    /// another.
    pub fn of_components(plan: &Plan) -> PlanGraph {
        let (nodes, edges) = component_graph(plan);
        PlanGraph { nodes, edges }
    }

    /// As a Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        mermaid(&self.nodes, &self.edges)
    }

    /// As a Graphviz digraph named after the environment.
    pub fn dot(&self, environment: &str) -> String {
        dot(environment, &self.nodes, &self.edges)
    }
}

type Graph = (Vec<(String, String)>, Vec<(String, String)>);

fn group_of(id: &str) -> String {
    id.rsplit_once('/').map_or(id, |(group, _)| group).to_owned()
}

fn step_graph(plan: &Plan) -> Graph {
    let nodes = plan
        .steps()
        .map(|s| (s.id.clone(), s.component.clone().unwrap_or_else(|| group_of(&s.id))))
        .collect();
    let mut edges = Vec::new();
    for step in plan.steps() {
        for dep in &step.depends_on {
            edges.push((dep.clone(), step.id.clone()));
        }
    }
    (nodes, edges)
}

fn component_graph(plan: &Plan) -> Graph {
    let component_of: BTreeMap<&str, String> = plan
        .steps()
        .map(|s| (s.id.as_str(), s.component.clone().unwrap_or_else(|| group_of(&s.id))))
        .collect();
    let mut nodes: Vec<(String, String)> = component_of.values().map(|c| (c.clone(), group_of(c))).collect();
    nodes.sort();
    nodes.dedup();
    let mut edges: Vec<(String, String)> = Vec::new();
    for step in plan.steps() {
        for dep in &step.depends_on {
            let (from, to) = (component_of[dep.as_str()].clone(), component_of[step.id.as_str()].clone());
            if from != to {
                edges.push((from, to));
            }
        }
    }
    edges.sort();
    edges.dedup();
    (nodes, edges)
}

fn node_key(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn mermaid(nodes: &[(String, String)], edges: &[(String, String)]) -> String {
    let mut out = String::from("flowchart TD\n");
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, group) in nodes {
        groups.entry(group).or_default().push(id);
    }
    for (group, ids) in groups {
        let _ = writeln!(out, "  subgraph {}[\"{group}\"]", node_key(&format!("g_{group}")));
        for id in ids {
            let _ = writeln!(out, "    {}[\"{}\"]", node_key(id), id.rsplit('/').next().unwrap_or(id));
        }
        let _ = writeln!(out, "  end");
    }
    for (from, to) in edges {
        let _ = writeln!(out, "  {} --> {}", node_key(from), node_key(to));
    }
    out
}

fn dot(environment: &str, nodes: &[(String, String)], edges: &[(String, String)]) -> String {
    let mut out = format!("digraph \"{environment}\" {{\n  rankdir=LR;\n  node [shape=box];\n");
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, group) in nodes {
        groups.entry(group).or_default().push(id);
    }
    for (idx, (group, ids)) in groups.into_iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{idx} {{\n    label=\"{group}\";");
        for id in ids {
            let _ = writeln!(out, "    \"{id}\" [label=\"{}\"];", id.rsplit('/').next().unwrap_or(id));
        }
        let _ = writeln!(out, "  }}");
    }
    for (from, to) in edges {
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
    }
    out.push_str("}\n");
    out
}
