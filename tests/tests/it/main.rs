mod canvas;
mod faults;
mod golden;
mod interop;
mod locks;
mod sentinel;
mod worker;
