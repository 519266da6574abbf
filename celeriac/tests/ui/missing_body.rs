// Without `remote`, a task needs a body.
#[celeriac::task(name = "jwql.shared_tasks.shared_tasks.run")]
fn run(input_file: String) -> Vec<String>;

fn main() {}
