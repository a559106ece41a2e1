"""``cfcore simulate``: write a simulated social-media world whose truth is known."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from cfcore.cli.common import seed_option
from cfcore.simulate import WorldParams

D = WorldParams()  # the defaults, shown in --help


@click.command("simulate")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--users", "n_users", type=click.IntRange(min=1), default=D.n_users, show_default=True
)
@click.option(
    "--items", "n_items", type=click.IntRange(min=1), default=D.n_items, show_default=True
)
@click.option(
    "--views",
    "n_views",
    type=click.IntRange(min=1),
    default=D.n_views,
    show_default=True,
    help="Distinct (user, item) views, about.",
)
@click.option(
    "--classes",
    "n_classes",
    type=click.IntRange(min=1),
    default=D.n_classes,
    show_default=True,
    help="Planted content classes: the shape family in each image (at most 24 with images).",
)
@click.option(
    "--styles",
    "n_styles",
    type=click.IntRange(min=1),
    default=D.n_styles,
    show_default=True,
    help="Planted styles: the palette and background of each image.",
)
@click.option("--image-size", type=click.IntRange(min=8), default=D.image_size, show_default=True)
@click.option(
    "--class-concentration",
    type=click.FloatRange(min=0, min_open=True),
    default=D.class_concentration,
    show_default=True,
    help="Dirichlet concentration of each user's class taste (< 1: users like few classes).",
)
@click.option(
    "--style-concentration",
    type=click.FloatRange(min=0, min_open=True),
    default=D.style_concentration,
    show_default=True,
    help="Dirichlet concentration of each user's style taste.",
)
@click.option(
    "--noise",
    type=click.FloatRange(0, 1),
    default=D.noise,
    show_default=True,
    help="Fraction of views drawn by popularity alone, whatever the user likes.",
)
@click.option(
    "--popularity-sigma",
    type=click.FloatRange(min=0),
    default=D.popularity_sigma,
    show_default=True,
    help="σ of the log-normal item popularity (appeal the image does not show).",
)
@click.option(
    "--activity-sigma",
    type=click.FloatRange(min=0),
    default=D.activity_sigma,
    show_default=True,
    help="σ of the log-normal user activity.",
)
@click.option(
    "--min-views",
    type=click.IntRange(min=1),
    default=D.min_views,
    show_default=True,
    help="Views of the least active users.",
)
@click.option(
    "--pixel-noise",
    type=click.FloatRange(min=0),
    default=D.pixel_noise,
    show_default=True,
    help="Standard deviation of the images' pixel noise (intensities 0…1).",
)
@click.option(
    "--tag-rate",
    type=click.FloatRange(0, 1),
    default=D.tag_rate,
    show_default=True,
    help="Fraction of each user's views it tags with a word of the item's attributes "
    "(tags.csv, users.csv; 0: no tags). The views do not depend on it.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Fraction of items held out with their views: writes train_views.npz and "
    "test_items.csv (0: neither).",
)
@click.option("--no-images", is_flag=True, help="Do not render images (benchmark-only worlds).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it holds a world.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Threads rendering and writing images.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@seed_option
def simulate(
    output: Path,
    holdout: float,
    no_images: bool,
    force: bool,
    workers: int,
    quiet: bool,
    **params: Any,
) -> None:
    """Simulate a social-media site and write it to the folder OUTPUT.

    Users with latent tastes over content classes and styles view items that other
    users uploaded; each item's image shows its class (a shape family) and style (a
    palette and background), so a CNN can learn from the pictures what factorization
    learns from the views. Everything is a function of the options and --seed.

    \b
    OUTPUT/ holds:
      views.npz        who viewed what (an interactions file for every cfcore command)
      train_views.npz  the views of the items not held out (--holdout)
      test_items.csv   the held-out items, for `cfvision evaluate --test-items`
      owners.csv       item_id,owner: who uploaded each item (--owners)
      classes.csv      item_id,label: the planted class (--labels, NMI)
      attributes.csv   item_id,labels: shape|fill|palette|background (multi-label)
      tags.csv         user_id,item_id,tag: who tagged what with which attribute word
      users.csv        user_id,focus: each user's tagging focus, shape or colour
      truth.npz        every latent array (tastes, popularity, owners, image jitter)
      images/<id>.png  one image per item (cfvision reads OUTPUT as IMAGES)
      world.json       parameters and summary, written last

    The folder is written under a temporary name and renamed at the end, so an
    interrupted run leaves no half-written world.

    \b
    Examples:
      cfcore simulate world/                                   # the small default world
      cfcore simulate big/ --users 100000 --items 200000 --views 10000000 --no-images
    \b
    The paper's pipeline on it, with learned vs random-init features:
      cfcore factorize world/train_views.npz -o model.npz --threads 1
      cfcore cluster model.npz -k 8 -o labels.npz
      cfvision train world/ labels.npz -o run/ --arch small --image-size 32 --epochs 5
      cfvision extract world/ --checkpoint run/checkpoint.pt -o learned.npz
      cfvision extract world/ --arch small --image-size 32 -o random.npz
      cfvision evaluate learned.npz random.npz --interactions world/views.npz \\
          --test-items world/test_items.csv --labels world/classes.csv \\
          --owners world/owners.csv
    """
    from cfcore.simulate import simulate as simulate_world

    start = time.perf_counter()
    world = simulate_world(**params)  # every other option is a parameter of the world
    drawn = time.perf_counter() - start
    world.save(
        output,
        images=not no_images,
        holdout=holdout,
        overwrite=force,
        progress=not quiet,
        workers=workers,
    )
    s = world.summary()
    click.echo(
        f"{s['users']} users × {s['items']} items, {s['views']} views "
        f"(density {s['density']:.2%}; median {s['views_per_user_median']:.0f} per user, "
        f"{s['views_per_item_median']:.0f} per item; {s['items_without_views']} items unviewed)"
    )
    click.echo(
        f"{s['classes']} classes × {s['styles']} styles; {s['owners']} owners, "
        f"{s['items_viewed_by_owner']} items viewed by their owner"
    )
    size = params["image_size"]
    images = "no images" if no_images else f"{s['items']} images of {size}×{size}"
    click.echo(
        f"drawn in {drawn:.1f}s, written in {time.perf_counter() - start - drawn:.1f}s "
        f"({images}) → {output}"
    )


COMMANDS = [simulate]
