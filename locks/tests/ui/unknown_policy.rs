// Policies are skip, wait or error.
#[locks::only_one(key = "x", policy = retry)]
fn monitor() {}

fn main() {}
