"""The C engine: `engine.c`, its build and ctypes binding, and the search backend it implements."""
