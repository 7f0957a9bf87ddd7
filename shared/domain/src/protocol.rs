//! The step output protocol: `::kiln::` lines a step prints, parsed by the runner.
