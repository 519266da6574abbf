// A positional `{}` does not say which argument builds the key.
#[locks::only_one(key = "calibrate:{}")]
fn calibrate(file: &str) {}

fn main() {}
