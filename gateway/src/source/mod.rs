//! Where readings and pictures come from: Modbus monitors and cameras; drones over MAVLink.

pub mod camera;
pub mod mavlink;
pub mod modbus;
