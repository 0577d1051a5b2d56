"""What a person does in Airflow 3.3's Connections page, as Selenium steps."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

#: Hang protection only: the machine may be busy.
WAIT = 120


def wait(driver: Any, timeout: float = WAIT) -> WebDriverWait[Any]:
    return WebDriverWait(driver, timeout, poll_frequency=0.25)


def button(scope: Any, text: str) -> WebElement:
    xpath = f".//button[normalize-space(.)={text!r}]"
    return wait(scope).until(lambda _: scope.find_element(By.XPATH, xpath))


def open_connections(driver: Any, base_url: str) -> None:
    driver.get(f"{base_url}/connections")
    wait(driver).until(
        ec.element_to_be_clickable((By.XPATH, "//button[normalize-space(.)='Add Connection']"))
    )
    # The list has loaded when it says how many there are, or that there are none.
    wait(driver).until(
        lambda d: (
            d.find_elements(By.TAG_NAME, "table")
            or "No connection found" in d.find_element(By.TAG_NAME, "body").text
        )
    )


def dialog(driver: Any) -> WebElement:
    return wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))


def open_add_form(driver: Any, base_url: str, conn_type: str = "Unkey") -> WebElement:
    """The Add Connection dialog with ``conn_type`` chosen in its connection-type dropdown."""
    open_connections(driver, base_url)
    button(driver, "Add Connection").click()
    form = dialog(driver)
    choose_connection_type(form, conn_type)
    return form


def connection_type_options(form: WebElement, typed: str) -> list[str]:
    """The options the connection-type dropdown offers for ``typed`` (left open)."""
    combo = form.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    combo.send_keys(typed)
    options = wait(form).until(lambda f: f.find_elements(By.CSS_SELECTOR, "[role=option]"))
    return [o.text for o in options]


def choose_connection_type(form: WebElement, label: str) -> None:
    combo = form.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    if combo.get_attribute("value") != label:
        set_value(combo, label)
    option = wait(form).until(
        lambda f: next(
            (o for o in f.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text == label), None
        )
    )
    option.click()
    wait(form).until(lambda f: f.find_elements(By.NAME, "password"))


def expand(form: WebElement, section: str) -> None:
    """Open an accordion section of the form (Standard Fields, Extra Fields, Extra Fields JSON)."""
    trigger = form.find_element(By.XPATH, f".//button[normalize-space(.)={section!r}]")
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    wait(form).until(lambda _: trigger.get_attribute("aria-expanded") == "true")


def label_texts(form: WebElement) -> list[str]:
    return [
        label.text.replace("*", "").strip()
        for label in form.find_elements(By.CSS_SELECTOR, "label[data-part=label]")
        if label.is_displayed()
    ]


def labelled_input(form: WebElement, label: str) -> WebElement:
    """The input or textarea a visible label points at."""
    element = form.find_element(
        By.XPATH, f".//label[@data-part='label'][normalize-space(translate(., '*', ''))={label!r}]"
    )
    if found := form.find_elements(By.ID, element.get_attribute("for") or ""):
        return found[0]
    # The extra fields' text inputs are named after the extra (element_api_id), not the label's target.
    field = element.find_element(By.XPATH, "./ancestor::*[@data-scope='field'][@data-part='root'][1]")
    return field.find_element(By.CSS_SELECTOR, "input, textarea")


def set_value(element: WebElement, value: str) -> None:
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(value)


def save(driver: Any, form: WebElement) -> None:
    save_button = button(form, "Save")
    wait(form).until(lambda _: save_button.is_enabled())
    save_button.click()
    wait(driver).until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))


def row(driver: Any, connection_id: str) -> WebElement:
    xpath = f"//tr[td[normalize-space(.)={connection_id!r}]]"
    return wait(driver).until(lambda d: d.find_element(By.XPATH, xpath))


def row_button(driver: Any, connection_id: str, label: str) -> WebElement:
    return row(driver, connection_id).find_element(By.CSS_SELECTOR, f"button[aria-label={label!r}]")


def toast_text(driver: Any, shows: str) -> str:
    """The whole text of the notification that shows ``shows`` (the Test button's result)."""

    def found(d: Any) -> str | None:
        for toast in d.find_elements(By.CSS_SELECTOR, "[data-scope=toast][data-part=root]"):
            if shows in (text := str(toast.text)):
                return text
        return None

    return str(wait(driver).until(found))


def close_toasts(driver: Any) -> None:
    for close in driver.find_elements(By.CSS_SELECTOR, "[data-scope=toast][data-part=close-trigger]"):
        if close.is_displayed():
            close.click()
    wait(driver).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-scope=toast][data-part=root]"))
