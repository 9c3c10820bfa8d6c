"""Events in: reading inputs, triggers, routing and mapping to CleverTap records."""
