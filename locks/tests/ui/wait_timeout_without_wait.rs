// A wait deadline only makes sense with policy = wait.
#[locks::only_one(key = "x", wait_timeout = 10)]
fn monitor() {}

fn main() {}
