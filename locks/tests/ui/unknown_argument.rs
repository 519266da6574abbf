// A misspelt argument is rejected, not ignored.
#[locks::only_one(key = "dark_monitor", timout = 30)]
fn monitor() {}

fn main() {}
