"""The bundled demo: a seeded shapes data set (shapes.py), the script that trains the demo U-Net on it
(train.py), and the loader for the shipped weights (bundled.py)."""
