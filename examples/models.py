"""The seed programs' Keras models, as factories a job spec names (`models.py:iris_model`)."""

import tensorflow as tf


def iris_model(seed: int = 42):
    """The Estimator tutorial's model: 4 measurements -> 3 iris species (logits)."""
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.models.Sequential(
        [
            tf.keras.layers.Dense(16, activation="relu", input_shape=(4,)),
            tf.keras.layers.Dropout(0.2),
            tf.keras.layers.Dense(3),
        ]
    )
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer="adam",
        metrics=["accuracy"],
    )
    return model


def adam(learning_rate: float):
    """Keras 2's legacy Adam under the Estimator trainer (TF 2.15), Keras 3's Adam under the
    Keras trainer: one factory for both."""
    keras2 = not getattr(tf.keras, "__version__", "2").startswith("3")  # 2.15 has none
    return (tf.keras.optimizers.legacy if keras2 else tf.keras.optimizers).Adam(learning_rate)


def penguins_model(seed: int = 42):
    """Penguins' species from where and when they were seen and their measurements:
    StringLookup and IntegerLookup with their vocabularies, one-hot, beside the normalised
    measurements."""
    tf.keras.utils.set_random_seed(seed)
    island = tf.keras.Input(shape=(1,), dtype=tf.string, name="island")
    sex = tf.keras.Input(shape=(1,), dtype=tf.string, name="sex")
    year = tf.keras.Input(shape=(1,), dtype=tf.int64, name="year")
    measurements = tf.keras.Input(shape=(4,), name="measurements")
    lookups = [
        tf.keras.layers.StringLookup(vocabulary=["Biscoe", "Dream", "Torgersen"])(island),
        tf.keras.layers.StringLookup(vocabulary=["female", "male"])(sex),
        tf.keras.layers.IntegerLookup(vocabulary=[2007, 2008, 2009])(year),
    ]
    parts = [
        tf.keras.layers.CategoryEncoding(4, output_mode="one_hot")(lookups[0]),
        tf.keras.layers.CategoryEncoding(3, output_mode="one_hot")(lookups[1]),
        tf.keras.layers.CategoryEncoding(4, output_mode="one_hot")(lookups[2]),
        tf.keras.layers.Normalization(
            mean=[44.0, 17.2, 201.0, 4200.0], variance=[30.0, 3.8, 190.0, 640000.0]
        )(measurements),
    ]
    x = tf.keras.layers.Concatenate()(parts)
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    species = tf.keras.layers.Dense(3, activation="softmax", name="species")(x)
    model = tf.keras.Model([island, sex, year, measurements], species)
    model.compile(
        optimizer=adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def bag_of_words_model(vocab_size: int = 1000, num_labels: int = 20, seed: int = 42):
    """The blog's Stack Overflow tagger: a bag-of-words vector -> one of 20 tags."""
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.models.Sequential()
    model.add(
        tf.keras.layers.Dense(512, input_shape=(vocab_size,), activation="relu", name="posts")
    )
    model.add(tf.keras.layers.Dense(num_labels, activation="softmax", name="labels"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def two_input_two_output_model(seed: int = 42):
    """The API doc's multi-IO model: two inputs share a layer, two softmax heads."""
    tf.keras.utils.set_random_seed(seed)
    input_a = tf.keras.layers.Input(shape=(16,), name="input_a")
    input_b = tf.keras.layers.Input(shape=(16,), name="input_b")
    dense = tf.keras.layers.Dense(8, name="dense_1")
    merged = tf.keras.layers.concatenate([dense(input_a), dense(input_b)], name="merge")
    output_a = tf.keras.layers.Dense(3, activation="softmax", name="dense_2")(merged)
    output_b = tf.keras.layers.Dense(2, activation="softmax", name="dense_3")(merged)
    model = tf.keras.models.Model(inputs=[input_a, input_b], outputs=[output_a, output_b])
    model.compile(
        loss="categorical_crossentropy",
        optimizer="rmsprop",
        metrics={"dense_2": "categorical_accuracy", "dense_3": "categorical_accuracy"},
    )
    return model
