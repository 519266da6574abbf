
mod locks;
