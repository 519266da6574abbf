// Key placeholders must name the function's arguments.
#[locks::only_one(key = "calibrate:{file}")]
fn calibrate(path: &str) {}

fn main() {}
