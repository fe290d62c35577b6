"""Datasets: loaders per recipe kind (`load`), the record and its splits (`dataset`), the
class order (`classes`), and label files (`label_names`)."""
