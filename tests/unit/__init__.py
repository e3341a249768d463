"""Pure logic on the fake engine, marker `unit`."""
