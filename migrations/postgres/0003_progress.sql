-- A `for_each`'s progress between items: written alone after each item, so
-- a checkpoint does not copy the run's whole state every time.
ALTER TABLE runs ADD COLUMN progress TEXT;
