//! `cargo xtask graph`: the plan's DAG as Mermaid or Graphviz dot.

use platform::plan::graph::PlanGraph;

use crate::compile_env::compile;
use crate::flags::{GraphCmd, GraphFormat};
use crate::repo::Repo;
use crate::{Outcome, ui};

pub fn run(repo: &Repo, cmd: &GraphCmd) -> Outcome {
    // The graph needs no secrets: compile without keys.
    let plan = match compile(&repo.tree(), &cmd.environment, None) {
        Ok(plan) => plan,
        Err(outcome) => return outcome,
    };
    let graph = if cmd.components { PlanGraph::of_components(&plan) } else { PlanGraph::of_steps(&plan) };
    let out = match cmd.format {
        GraphFormat::Mermaid => graph.mermaid(),
        GraphFormat::Dot => graph.dot(&cmd.environment),
    };
    ui::stdout(&out);
    Outcome::Success
}
