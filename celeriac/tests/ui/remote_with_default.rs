// A remote task's stubs send every argument: a default would be silently ignored.
#[celeriac::task(name = "jwql.shared_tasks.shared_tasks.run", remote)]
fn run(input_file: String, #[arg(default = 1)] level: u8) -> Vec<String>;

fn main() {}
