// Each argument may be given once.
#[locks::only_one(key = "a", key = "b")]
fn monitor() {}

fn main() {}
