//! The Postern relay (skeleton).

fn main() {}
