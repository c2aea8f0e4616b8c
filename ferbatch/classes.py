"""The FER2013 label space, shared by data loading, training and scoring."""

CLASS_NAMES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
