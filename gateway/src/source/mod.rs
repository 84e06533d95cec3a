//! Where readings and pictures come from: Modbus monitors and cameras; drones join as a sibling.

pub mod camera;
pub mod modbus;
