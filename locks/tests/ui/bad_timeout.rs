// Timeouts are numbers of seconds.
#[locks::only_one(key = "x", timeout = "30s")]
fn monitor() {}

fn main() {}
